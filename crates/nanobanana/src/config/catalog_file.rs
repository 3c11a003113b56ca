//! The model catalog file (`NB_MODELS_FILE`) and the `[[models.model]]` entries of the
//! configuration file: `[[model]]` tables whose fields patch the built-in catalog by `id`
//! (see docs/models.md). Each entry is read on its own, so an error names the file, the
//! entry and the field.

use std::path::Path;

use std::collections::BTreeMap;

use nb_domain::generation::{CatalogError, ModelCatalog, ModelPatch, PricePatch};
use serde::Deserialize;
use time::Date;

/// One `[[model]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    pub aliases: Option<Vec<String>>,
    pub api: Option<String>,
    pub aspect_ratios: Option<Vec<String>>,
    pub resolutions: Option<Vec<String>>,
    pub max_input_images: Option<usize>,
    /// `YYYY-MM-DD` (a TOML date, or a string).
    pub retired_at: Option<DateSetting>,
    pub replaced_by: Option<String>,
    pub price: Option<PriceEntry>,
    /// Tried next, in order, when this model is overloaded, rate limited, failing or gone.
    pub fallbacks: Option<Vec<String>>,
    /// `gemini` (the Gemini API, the default) or `vertex` (Vertex AI).
    pub provider: Option<String>,
    /// The id sent to Google when it differs from `id`.
    pub google_model: Option<String>,
}

/// `[model.price]`: USD per million tokens, and `[model.price.per_image]` USD per image by
/// resolution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub input_text: Option<f64>,
    pub input_image: Option<f64>,
    pub output_image: Option<f64>,
    pub output_text: Option<f64>,
    pub batch_discount: Option<f64>,
    pub per_image: Option<BTreeMap<String, f64>>,
}

/// A day, written as a TOML local date (`2027-06-30`) or as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateSetting(pub Date);

impl<'de> Deserialize<'de> for DateSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Toml(toml::value::Datetime),
            Text(String),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Toml(datetime) => datetime.to_string(),
            Written::Text(text) => text,
        };
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(&text, &format)
            .map(Self)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a day (YYYY-MM-DD)")))
    }
}

impl From<ModelEntry> for ModelPatch {
    fn from(entry: ModelEntry) -> Self {
        Self {
            id: entry.id,
            aliases: entry.aliases,
            api: entry.api,
            aspect_ratios: entry.aspect_ratios,
            resolutions: entry.resolutions,
            max_input_images: entry.max_input_images,
            retired_at: entry.retired_at.map(|day| day.0),
            replaced_by: entry.replaced_by,
            fallbacks: entry.fallbacks,
            provider: entry.provider,
            google_model: entry.google_model,
            price: entry.price.map(|price| PricePatch {
                input_text: price.input_text,
                input_image: price.input_image,
                output_image: price.output_image,
                output_text: price.output_text,
                batch_discount: price.batch_discount,
                per_image: price.per_image.map(|table| table.into_iter().collect()),
            }),
        }
    }
}

/// Why the catalog file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFileError {
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is not TOML: {0}")]
    NotToml(String),
    #[error("{0}")]
    Entry(String),
    #[error("{0}")]
    Catalog(#[from] CatalogError),
}

/// The entries of a catalog file's text: its `[[model]]` tables, nothing else.
pub fn parse_catalog_file(text: &str) -> Result<Vec<ModelEntry>, CatalogFileError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|error| CatalogFileError::NotToml(error.message().to_owned()))?;
    let mut entries = Vec::new();
    for (key, value) in table {
        if key != "model" {
            return Err(CatalogFileError::Entry(format!(
                "unknown table or key {key:?}: the file holds [[model]] entries only"
            )));
        }
        let toml::Value::Array(models) = value else {
            return Err(CatalogFileError::Entry(
                "model must be [[model]] tables".into(),
            ));
        };
        entries.extend(
            models
                .into_iter()
                .enumerate()
                .map(|(index, value)| entry(index, value))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(entries)
}

/// One entry, its errors naming it (by its id, or its position when it has none).
pub fn entry(index: usize, value: toml::Value) -> Result<ModelEntry, CatalogFileError> {
    let name = value
        .get("id")
        .and_then(toml::Value::as_str)
        .map_or_else(|| format!("#{}", index + 1), |id| format!("{id:?}"));
    ModelEntry::deserialize(value)
        .map_err(|error| CatalogFileError::Entry(format!("model {name}: {}", error.message())))
}

/// The built-in catalog patched by the file at `path` (when there is one) and then by the
/// configuration's own entries.
pub fn load_catalog(
    path: Option<&Path>,
    configured: &[ModelEntry],
) -> Result<ModelCatalog, CatalogFileError> {
    let mut patches: Vec<ModelPatch> = Vec::new();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(CatalogFileError::Unreadable)?;
        patches.extend(parse_catalog_file(&text)?.into_iter().map(ModelPatch::from));
    }
    patches.extend(configured.iter().cloned().map(ModelPatch::from));
    Ok(ModelCatalog::with_patches(patches)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_example_entry_is_read_field_by_field() {
        let entries = parse_catalog_file(
            r#"
            [[model]]
            id = "gemini-3-pro-image"
            aliases = ["nano-banana-pro"]
            api = "gemini"
            aspect_ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
            resolutions = ["1K", "2K", "4K"]
            max_input_images = 14
            retired_at = 2027-06-30
            replaced_by = "gemini-3.1-flash-image"

            [[model]]
            id = "gemini-nano-banana-2.1"
            aspect_ratios = ["1:1"]
            resolutions = ["1K", "2K", "4K"]
            max_input_images = 14
            retired_at = "2027-12-31"
            "#,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].retired_at,
            Some(DateSetting(time::macros::date!(2027 - 06 - 30)))
        );
        let catalog =
            ModelCatalog::with_patches(entries.into_iter().map(Into::into).collect()).unwrap();
        assert!(catalog.find("gemini-nano-banana-2.1").is_some());
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        let unknown_field =
            parse_catalog_file("[[model]]\nid = \"gemini-3-pro-image\"\nmax_images = 3\n")
                .unwrap_err()
                .to_string();
        assert!(
            unknown_field.contains("\"gemini-3-pro-image\"")
                && unknown_field.contains("max_images"),
            "{unknown_field}"
        );
        let second = parse_catalog_file("[[model]]\nid = \"a\"\n[[model]]\nresolutions = \"1K\"\n")
            .unwrap_err()
            .to_string();
        assert!(second.contains("#2"), "{second}");
        let stray = parse_catalog_file("[models]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(stray.contains("[[model]]"), "{stray}");
        let bad_day = parse_catalog_file("[[model]]\nid = \"a\"\nretired_at = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(bad_day.contains("soon"), "{bad_day}");
    }

    #[test]
    fn prices_are_read_as_the_issue_writes_them_and_patch_field_by_field() {
        let entries = parse_catalog_file(
            r#"
            [[model]]
            id = "gemini-3.1-flash-image"
            [model.price]
            input_text = 0.50
            input_image = 0.50
            output_image = 60.0
            output_text = 3.00
            batch_discount = 0.5
            [model.price.per_image]
            "512" = 0.045
            "1K" = 0.067
            "2K" = 0.101
            "4K" = 0.151

            [[model]]
            id = "gemini-3-pro-image"
            [model.price]
            output_text = 10
            "#,
        )
        .unwrap();
        let catalog =
            ModelCatalog::with_patches(entries.into_iter().map(Into::into).collect()).unwrap();
        let flash = catalog.find("gemini-3.1-flash-image").unwrap();
        let price = flash.price.as_ref().unwrap();
        assert_eq!(
            price
                .estimate(nb_domain::generation::Resolution::K1, 1)
                .to_string(),
            "0.067000"
        );
        let pro = catalog.find("gemini-3-pro-image").unwrap();
        let pro_price = pro.price.as_ref().unwrap();
        // The one field named changed; the built-in others stayed.
        assert_eq!(
            pro_price.output_text.per_million_usd().to_string(),
            "10.000000"
        );
        assert_eq!(
            pro_price.output_image.per_million_usd().to_string(),
            "120.000000"
        );

        let unknown = parse_catalog_file(
            "[[model]]\nid = \"gemini-3-pro-image\"\n[model.price]\noutput = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("output"), "{unknown}");
        let bad = ModelCatalog::with_patches(
            parse_catalog_file(
                "[[model]]\nid = \"gemini-3-pro-image\"\n[model.price]\ninput_text = 0.0001\n",
            )
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("price.input_text") && bad.contains("0.001"),
            "{bad}"
        );
    }
}
