//! The model catalog: what each image model can make (aspect ratios, resolutions, how many
//! reference images it takes), what its images cost, and when it retires. Built in, and patched by the operator's
//! catalog file entry by entry and field by field (the composition root reads the file; the
//! rules of merging and checking live here).

use std::fmt;
use std::sync::Arc;

use time::Date;
use time::macros::date;

use std::collections::BTreeMap;

use super::tokens::TokenUsage;
use crate::money::{TokenPrice, Usd};

/// An aspect ratio in Google's notation, `W:H` (e.g. `16:9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AspectRatio {
    width: u16,
    height: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an aspect ratio is written W:H, e.g. 16:9")]
pub struct InvalidAspectRatio;

impl AspectRatio {
    pub const SQUARE: Self = Self {
        width: 1,
        height: 1,
    };

    pub fn parse(raw: &str) -> Result<Self, InvalidAspectRatio> {
        let (width, height) = raw.split_once(':').ok_or(InvalidAspectRatio)?;
        let side = |text: &str| {
            text.parse::<u16>()
                .ok()
                .filter(|n| *n > 0 && text.bytes().all(|b| b.is_ascii_digit()))
        };
        match (side(width), side(height)) {
            (Some(width), Some(height)) => Ok(Self { width, height }),
            _ => Err(InvalidAspectRatio),
        }
    }

    /// Width over height.
    pub fn ratio(self) -> f64 {
        f64::from(self.width) / f64::from(self.height)
    }
}

impl fmt::Display for AspectRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.width, self.height)
    }
}

/// An output resolution, as Google's `imageConfig.imageSize` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    Px512,
    K1,
    K2,
    K4,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a resolution is one of 512, 1K, 2K, 4K")]
pub struct InvalidResolution;

impl Resolution {
    pub const ALL: [Self; 4] = [Self::Px512, Self::K1, Self::K2, Self::K4];

    /// Exactly Google's spelling (`1k` is refused by Google, and here).
    pub fn parse(raw: &str) -> Result<Self, InvalidResolution> {
        Self::ALL
            .into_iter()
            .find(|resolution| resolution.as_str() == raw)
            .ok_or(InvalidResolution)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Px512 => "512",
            Self::K1 => "1K",
            Self::K2 => "2K",
            Self::K4 => "4K",
        }
    }

    /// The side of a square image at this resolution.
    pub fn square_side(self) -> u32 {
        match self {
            Self::Px512 => 512,
            Self::K1 => 1024,
            Self::K2 => 2048,
            Self::K4 => 4096,
        }
    }

    /// About how long the long side of an image in `ratio` is: the square's area in that
    /// ratio. (Google's exact pixel sizes differ by a few pixels; they are documented, never
    /// needed by a rule.)
    pub fn approximate_long_side(self, ratio: AspectRatio) -> u32 {
        let stretch = ratio.ratio().max(1.0 / ratio.ratio());
        (f64::from(self.square_side()) * stretch.sqrt()).round() as u32
    }
}

/// How a model is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelApi {
    /// `:generateContent` with `generationConfig.imageConfig`.
    Gemini,
    /// `:predict` (Imagen).
    Imagen,
}

impl ModelApi {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "gemini" => Some(Self::Gemini),
            "imagen" => Some(Self::Imagen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Imagen => "imagen",
        }
    }
}

/// Which of Google's front doors a model is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProvider {
    /// The Gemini API (AI Studio keys).
    #[default]
    GeminiApi,
    /// Vertex AI (a Google Cloud project and a service account).
    Vertex,
}

impl UpstreamProvider {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "gemini" => Some(Self::GeminiApi),
            "vertex" => Some(Self::Vertex),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GeminiApi => "gemini",
            Self::Vertex => "vertex",
        }
    }
}

/// What one model can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// What Google calls it.
    pub id: String,
    /// Other names clients may use.
    pub aliases: Vec<String>,
    pub api: ModelApi,
    pub aspect_ratios: Vec<AspectRatio>,
    /// The first is the default (sent as no `imageSize` at all).
    pub resolutions: Vec<Resolution>,
    /// Reference images one request may carry; 0: the model cannot edit.
    pub max_input_images: usize,
    /// From this day (UTC) on, refused.
    pub retired_at: Option<Date>,
    /// Named in the refusal once retired.
    pub replaced_by: Option<String>,
    /// What its images cost; `None`: the operator has not priced it (its images cost 0,
    /// and start-up warns).
    pub price: Option<ModelPrice>,
    /// The models tried next, in order, when this one is overloaded, rate limited, failing,
    /// slow or gone (catalog ids; each an image model of the catalog).
    pub fallbacks: Vec<String>,
    /// Where it is called.
    pub provider: UpstreamProvider,
    /// The id sent to Google, when it differs from `id` (the same Google model offered under
    /// two names, e.g. `gemini-3-pro-image@vertex`).
    pub google_model: Option<String>,
}

impl ModelSpec {
    /// The model id Google is sent.
    pub fn google_id(&self) -> &str {
        self.google_model.as_deref().unwrap_or(&self.id)
    }

    pub fn default_resolution(&self) -> Resolution {
        self.resolutions.first().copied().unwrap_or(Resolution::K1)
    }

    pub fn is_retired_on(&self, today: Date) -> bool {
        self.retired_at
            .is_some_and(|retired_at| today >= retired_at)
    }

    pub fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|alias| alias == name)
    }

    pub fn aspect_ratio_list(&self) -> String {
        join(self.aspect_ratios.iter().map(ToString::to_string))
    }

    pub fn resolution_list(&self) -> String {
        join(self.resolutions.iter().map(|r| r.as_str().to_owned()))
    }

    /// The shape of an image of `width`×`height` pixels on this model: its nearest aspect
    /// ratio (on a log scale, so 2:1 is as far from 1:1 as 1:2 is), and the smallest of its
    /// resolutions whose image's long side is at least three quarters of the requested long
    /// side, else its largest.
    pub fn shape_for_size(&self, width: u32, height: u32) -> (AspectRatio, Resolution) {
        let wanted = (f64::from(width.max(1)) / f64::from(height.max(1))).ln();
        let distance = |ratio: &AspectRatio| (ratio.ratio().ln() - wanted).abs();
        let ratio = self
            .aspect_ratios
            .iter()
            .copied()
            .min_by(|a, b| distance(a).total_cmp(&distance(b)))
            .unwrap_or(AspectRatio::SQUARE);
        let mut resolutions = self.resolutions.clone();
        resolutions.sort();
        let long_side = f64::from(width.max(height));
        let resolution = resolutions
            .iter()
            .copied()
            .find(|resolution| {
                f64::from(resolution.approximate_long_side(ratio)) >= 0.75 * long_side
            })
            .or_else(|| resolutions.last().copied())
            .unwrap_or(Resolution::K1);
        (ratio, resolution)
    }
}

/// A built-in price: `[input text, input image, output image, output text]` in dollars per
/// million tokens, and dollars per image by resolution (constants, checked by
/// `every_built_in_image_costs_its_output_tokens_at_the_output_image_price`).
fn built_in_price(tokens: [f64; 4], per_image: &[(Resolution, &str)]) -> ModelPrice {
    let token = |dollars| TokenPrice::per_million_tokens(dollars).unwrap_or_default();
    ModelPrice {
        input_text: token(tokens[0]),
        input_image: token(tokens[1]),
        output_image: token(tokens[2]),
        output_text: token(tokens[3]),
        batch_discount_ppm: 500_000,
        per_image: per_image
            .iter()
            .map(|(resolution, dollars)| (*resolution, Usd::parse(dollars).unwrap_or_default()))
            .collect(),
    }
}

/// A price with the file's fields applied, each checked.
fn apply_price(
    mut price: ModelPrice,
    patch: PricePatch,
    fail: &dyn Fn(&'static str, String) -> CatalogError,
) -> Result<ModelPrice, CatalogError> {
    for (field, value, slot) in [
        ("price.input_text", patch.input_text, &mut price.input_text),
        (
            "price.input_image",
            patch.input_image,
            &mut price.input_image,
        ),
        (
            "price.output_image",
            patch.output_image,
            &mut price.output_image,
        ),
        (
            "price.output_text",
            patch.output_text,
            &mut price.output_text,
        ),
    ] {
        if let Some(dollars) = value {
            *slot = TokenPrice::per_million_tokens(dollars)
                .map_err(|error| fail(field, format!("{dollars}: {error}")))?;
        }
    }
    if let Some(discount) = patch.batch_discount {
        if !(0.0..=1.0).contains(&discount) {
            return Err(fail(
                "price.batch_discount",
                format!("{discount} must be a fraction from 0 to 1"),
            ));
        }
        price.batch_discount_ppm = (discount * 1_000_000.0).round() as u32;
    }
    if let Some(table) = patch.per_image {
        price.per_image.clear();
        for (resolution, dollars) in table {
            let at = Resolution::parse(&resolution)
                .map_err(|error| fail("price.per_image", format!("{resolution:?}: {error}")))?;
            let usd = Usd::from_number(dollars)
                .map_err(|error| fail("price.per_image", format!("{resolution}: {error}")))?;
            price.per_image.insert(at, usd);
        }
    }
    Ok(price)
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// One entry of the operator's catalog file: every field but `id` optional. An entry whose id
/// is built in changes only the fields it names; a new one names every field it needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelPatch {
    pub id: String,
    pub aliases: Option<Vec<String>>,
    pub api: Option<String>,
    pub aspect_ratios: Option<Vec<String>>,
    pub resolutions: Option<Vec<String>>,
    pub max_input_images: Option<usize>,
    pub retired_at: Option<Date>,
    pub replaced_by: Option<String>,
    pub price: Option<PricePatch>,
    pub fallbacks: Option<Vec<String>>,
    /// `gemini` or `vertex`.
    pub provider: Option<String>,
    pub google_model: Option<String>,
}

/// The `price` of a catalog file entry: dollars per million tokens, the batch discount as a
/// fraction, and dollars per image by resolution. Each field absent keeps the built-in one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricePatch {
    pub input_text: Option<f64>,
    pub input_image: Option<f64>,
    pub output_image: Option<f64>,
    pub output_text: Option<f64>,
    pub batch_discount: Option<f64>,
    /// Replaces the whole table when present.
    pub per_image: Option<Vec<(String, f64)>>,
}

/// A catalog that cannot be used, naming the entry and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {entry:?}, field {field}: {message}")]
pub struct CatalogError {
    /// The entry's id (or its position, when it has none).
    pub entry: String,
    pub field: &'static str,
    pub message: String,
}

/// Every model the deployment knows, enabled or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCatalog(Vec<Arc<ModelSpec>>);

/// The 10 ratios of the Gemini 3 image models.
const GEMINI_3_RATIOS: [&str; 10] = [
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];

impl ModelCatalog {
    /// The models Google offered on 2026-12-07 (see `docs/models.md` for the sources).
    pub fn built_in() -> Self {
        let ratios = |extra: &[&str]| {
            GEMINI_3_RATIOS
                .iter()
                .chain(extra)
                .filter_map(|raw| AspectRatio::parse(raw).ok())
                .collect::<Vec<_>>()
        };
        let spec =
            |id: &str, aliases: &[&str], aspect_ratios, resolutions: &[Resolution], inputs| {
                Arc::new(ModelSpec {
                    id: id.to_owned(),
                    aliases: aliases.iter().map(|alias| (*alias).to_owned()).collect(),
                    api: ModelApi::Gemini,
                    aspect_ratios,
                    resolutions: resolutions.to_vec(),
                    max_input_images: inputs,
                    retired_at: None,
                    replaced_by: None,
                    price: None,
                    fallbacks: Vec::new(),
                    provider: UpstreamProvider::GeminiApi,
                    google_model: None,
                })
            };
        use Resolution::{K1, K2, K4, Px512};
        let mut flash_2_5 = spec(
            "gemini-2.5-flash-image",
            &["nano-banana"],
            ratios(&[]),
            &[K1],
            3,
        );
        let retire = |spec: &mut Arc<ModelSpec>, on: Date| {
            let spec = Arc::make_mut(spec);
            spec.retired_at = Some(on);
            spec.replaced_by = Some("gemini-3.1-flash-image".to_owned());
        };
        retire(&mut flash_2_5, date!(2026 - 10 - 02));
        let mut imagen_4 = Arc::new(ModelSpec {
            id: "imagen-4.0-generate-001".to_owned(),
            aliases: Vec::new(),
            api: ModelApi::Imagen,
            aspect_ratios: ["1:1", "3:4", "4:3", "9:16", "16:9"]
                .iter()
                .filter_map(|raw| AspectRatio::parse(raw).ok())
                .collect(),
            resolutions: vec![K1, K2],
            max_input_images: 0,
            retired_at: None,
            replaced_by: None,
            fallbacks: Vec::new(),
            provider: UpstreamProvider::GeminiApi,
            google_model: None,
            price: Some(built_in_price(
                [0.0, 0.0, 0.0, 0.0],
                &[(K1, "0.04"), (K2, "0.04")],
            )),
        });
        retire(&mut imagen_4, date!(2026 - 08 - 17));
        let priced = |mut spec: Arc<ModelSpec>, tokens: [f64; 4], per_image: &[_]| {
            Arc::make_mut(&mut spec).price = Some(built_in_price(tokens, per_image));
            spec
        };
        // Google's price list (see `docs/pricing.md` for the sources and their dates):
        // dollars per million tokens of input text, input image, output image, output text;
        // per image: output image tokens at that resolution × the output image price.
        Self(vec![
            priced(
                spec(
                    "gemini-3.1-flash-image",
                    &["nano-banana-2"],
                    ratios(&["1:4", "4:1", "1:8", "8:1"]),
                    &[K1, Px512, K2, K4],
                    14,
                ),
                [0.50, 0.50, 60.0, 3.00],
                &[
                    (Px512, "0.04482"),
                    (K1, "0.0672"),
                    (K2, "0.1008"),
                    (K4, "0.1512"),
                ],
            ),
            priced(
                spec(
                    "gemini-3-pro-image",
                    &["nano-banana-pro"],
                    ratios(&[]),
                    &[K1, K2, K4],
                    14,
                ),
                [2.00, 2.00, 120.0, 12.00],
                &[(K1, "0.1344"), (K2, "0.1344"), (K4, "0.24")],
            ),
            priced(
                spec(
                    "gemini-3.1-flash-lite-image",
                    &[],
                    ratios(&["1:4", "4:1", "1:8", "8:1"]),
                    &[K1],
                    14,
                ),
                [0.25, 0.25, 30.0, 1.50],
                &[(K1, "0.0336")],
            ),
            priced(flash_2_5, [0.30, 0.30, 30.0, 2.50], &[(K1, "0.0387")]),
            imagen_4,
        ])
    }

    /// The built-in catalog with the operator's entries applied in order, then checked as a
    /// whole (no id or alias twice, every field usable).
    pub fn with_patches(patches: Vec<ModelPatch>) -> Result<Self, CatalogError> {
        let mut catalog = Self::built_in();
        for (index, patch) in patches.into_iter().enumerate() {
            catalog.apply(index, patch)?;
        }
        catalog.check()?;
        Ok(catalog)
    }

    fn apply(&mut self, index: usize, patch: ModelPatch) -> Result<(), CatalogError> {
        let entry = if patch.id.trim().is_empty() {
            format!("#{}", index + 1)
        } else {
            patch.id.clone()
        };
        let fail = |field, message: String| CatalogError {
            entry: entry.clone(),
            field,
            message,
        };
        if patch.id.trim().is_empty() || patch.id.trim() != patch.id {
            return Err(fail("id", "must be a model id without spaces".into()));
        }
        let existing = self.0.iter().position(|spec| spec.id == patch.id);
        let mut spec = match existing {
            Some(at) => (*self.0[at]).clone(),
            None => ModelSpec {
                id: patch.id.clone(),
                aliases: Vec::new(),
                api: ModelApi::Gemini,
                aspect_ratios: Vec::new(),
                resolutions: Vec::new(),
                max_input_images: 0,
                retired_at: None,
                replaced_by: None,
                price: None,
                fallbacks: Vec::new(),
                provider: UpstreamProvider::GeminiApi,
                google_model: None,
            },
        };
        if existing.is_none() {
            for (field, present) in [
                ("aspect_ratios", patch.aspect_ratios.is_some()),
                ("resolutions", patch.resolutions.is_some()),
                ("max_input_images", patch.max_input_images.is_some()),
            ] {
                if !present {
                    return Err(fail(
                        field,
                        "is required for a model that is not built in".into(),
                    ));
                }
            }
        }
        if let Some(aliases) = patch.aliases {
            spec.aliases = aliases;
        }
        if let Some(api) = patch.api {
            spec.api = ModelApi::parse(&api)
                .ok_or_else(|| fail("api", format!("{api:?} is not gemini or imagen")))?;
        }
        if let Some(ratios) = patch.aspect_ratios {
            spec.aspect_ratios = ratios
                .iter()
                .map(|raw| {
                    AspectRatio::parse(raw)
                        .map_err(|error| fail("aspect_ratios", format!("{raw:?}: {error}")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(resolutions) = patch.resolutions {
            spec.resolutions = resolutions
                .iter()
                .map(|raw| {
                    Resolution::parse(raw).map_err(|error| {
                        fail(
                            "resolutions",
                            format!("{raw:?} is not a resolution Google has ({error})"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(max) = patch.max_input_images {
            spec.max_input_images = max;
        }
        if let Some(retired_at) = patch.retired_at {
            spec.retired_at = Some(retired_at);
        }
        if let Some(replaced_by) = patch.replaced_by {
            spec.replaced_by = Some(replaced_by);
        }
        if let Some(fallbacks) = patch.fallbacks {
            spec.fallbacks = fallbacks;
        }
        if let Some(provider) = patch.provider {
            spec.provider = UpstreamProvider::parse(&provider)
                .ok_or_else(|| fail("provider", format!("{provider:?} is not gemini or vertex")))?;
        }
        if let Some(google_model) = patch.google_model {
            if google_model.trim().is_empty() || google_model.contains(['/', ':', '?', '#']) {
                return Err(fail(
                    "google_model",
                    "must be a Google model id (no '/', ':', '?' or '#')".into(),
                ));
            }
            spec.google_model = Some(google_model);
        }
        if let Some(price) = patch.price {
            spec.price = Some(apply_price(
                spec.price.take().unwrap_or_default(),
                price,
                &fail,
            )?);
        }
        match existing {
            Some(at) => self.0[at] = Arc::new(spec),
            None => self.0.push(Arc::new(spec)),
        }
        Ok(())
    }

    fn check(&self) -> Result<(), CatalogError> {
        let mut names: Vec<&str> = Vec::new();
        for spec in &self.0 {
            let fail = |field, message: String| CatalogError {
                entry: spec.id.clone(),
                field,
                message,
            };
            if spec.aspect_ratios.is_empty() {
                return Err(fail("aspect_ratios", "must name at least one ratio".into()));
            }
            if spec.resolutions.is_empty() {
                return Err(fail(
                    "resolutions",
                    "must name at least one resolution".into(),
                ));
            }
            for (position, ratio) in spec.aspect_ratios.iter().enumerate() {
                if spec.aspect_ratios[..position].contains(ratio) {
                    return Err(fail("aspect_ratios", format!("{ratio} is listed twice")));
                }
            }
            for (position, resolution) in spec.resolutions.iter().enumerate() {
                if spec.resolutions[..position].contains(resolution) {
                    return Err(fail(
                        "resolutions",
                        format!("{} is listed twice", resolution.as_str()),
                    ));
                }
            }
            if spec.api == ModelApi::Imagen && spec.provider == UpstreamProvider::Vertex {
                return Err(fail(
                    "provider",
                    "Imagen models are called through the Gemini API here".into(),
                ));
            }
            if spec.api == ModelApi::Imagen && spec.max_input_images > 0 {
                return Err(fail(
                    "max_input_images",
                    "Imagen models cannot edit: must be 0".into(),
                ));
            }
            for (field, name) in std::iter::once(("id", spec.id.as_str()))
                .chain(spec.aliases.iter().map(|alias| ("aliases", alias.as_str())))
            {
                if name.trim().is_empty() {
                    return Err(fail(field, "must not be empty".into()));
                }
                if names.contains(&name) {
                    return Err(fail(field, format!("{name:?} names another model too")));
                }
                names.push(name);
            }
        }
        for spec in &self.0 {
            if let Some(replacement) = &spec.replaced_by
                && self.find(replacement).is_none()
            {
                return Err(CatalogError {
                    entry: spec.id.clone(),
                    field: "replaced_by",
                    message: format!("{replacement:?} is not in the catalog"),
                });
            }
            for fallback in &spec.fallbacks {
                let fail = |message: String| CatalogError {
                    entry: spec.id.clone(),
                    field: "fallbacks",
                    message,
                };
                // Every catalog model makes images (Gemini image models and Imagen): a
                // fallback must be one of them, so a chain never ends in an empty answer.
                let Some(target) = self.find(fallback) else {
                    return Err(fail(format!(
                        "{fallback:?} is not an image model of the catalog"
                    )));
                };
                if target.id == spec.id {
                    return Err(fail(format!("{fallback:?} is the model itself")));
                }
            }
        }
        Ok(())
    }

    /// The model with this id or alias.
    pub fn find(&self, name: &str) -> Option<&Arc<ModelSpec>> {
        self.0.iter().find(|spec| spec.answers_to(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<ModelSpec>> {
        self.0.iter()
    }

    pub fn ids(&self) -> String {
        join(self.0.iter().map(|spec| spec.id.clone()))
    }
}

// ---- Prices ----
//
// What a model's images cost: its prices as Google bills them (per million tokens, by kind of
// token, and per image for when Google counts nothing), the cost of one generation, and the
// estimate a budget reserves before the call. The one place the cost formula lives.

/// A model's prices, in USD, as Google's price list states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPrice {
    /// Prompt tokens of text (and of any modality Google does not split out).
    pub input_text: TokenPrice,
    /// Prompt tokens of the reference images.
    pub input_image: TokenPrice,
    /// Candidate tokens of the images made.
    pub output_image: TokenPrice,
    /// Candidate tokens of text, and thinking tokens.
    pub output_text: TokenPrice,
    /// Batch mode's discount, in parts per million (500,000: half price). Kept for the batch
    /// work; unused for now.
    pub batch_discount_ppm: u32,
    /// One image at each resolution: the cost when Google sent no token counts, and the
    /// estimate a budget reserves.
    pub per_image: BTreeMap<Resolution, Usd>,
}

impl ModelPrice {
    /// What one generation at `resolution` cost, from what Google counted (`usage`):
    ///
    /// - prompt tokens: text × `input_text` + image × `input_image`; prompt tokens of no
    ///   reported modality (or all of them, when Google splits none) × `input_text`;
    /// - candidate tokens: image × `output_image` + text × `output_text`; candidate tokens of
    ///   no reported modality (or all, when none is split) × `output_image` (an image model's
    ///   candidates are its image: never priced as text);
    /// - thinking tokens × `output_text`;
    /// - no usage at all, or no candidate tokens counted: the image is priced at
    ///   `per_image` for its resolution (see [`Self::estimate`] for a resolution without
    ///   one), plus the prompt tokens counted.
    pub fn cost(&self, usage: Option<&TokenUsage>, resolution: Resolution) -> Usd {
        let per_image = self.per_image_at(resolution);
        let Some(usage) = usage else {
            return per_image;
        };
        let input_text = usage.input_text_tokens.unwrap_or(0);
        let input_image = usage.input_image_tokens.unwrap_or(0);
        let input_other = usage
            .input_tokens
            .saturating_sub(input_text.saturating_add(input_image));
        let input = self
            .input_text
            .times(input_text.saturating_add(input_other))
            .saturating_add(self.input_image.times(input_image));
        let output = if usage.output_tokens == 0 {
            per_image
        } else {
            let output_image = usage.output_image_tokens.unwrap_or(0);
            let output_text = usage.output_text_tokens.unwrap_or(0);
            let output_other = usage
                .output_tokens
                .saturating_sub(output_image.saturating_add(output_text));
            self.output_image
                .times(output_image.saturating_add(output_other))
                .saturating_add(self.output_text.times(output_text))
        };
        let thinking = self.output_text.times(usage.thinking_tokens);
        input.saturating_add(output).saturating_add(thinking)
    }

    /// What a budget reserves before the call: `per_image` at `resolution` × `images` (the
    /// prompt and reference images are not estimated).
    pub fn estimate(&self, resolution: Resolution, images: u64) -> Usd {
        self.per_image_at(resolution).saturating_mul(images)
    }

    /// The per-image price at `resolution`; at a resolution the table lacks (an operator
    /// who gave a model a new resolution and no price for it), the table's highest price, so
    /// that an estimate errs high; 0 when the table is empty.
    fn per_image_at(&self, resolution: Resolution) -> Usd {
        self.per_image
            .get(&resolution)
            .or_else(|| self.per_image.values().max())
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flash() -> Arc<ModelSpec> {
        ModelCatalog::built_in()
            .find("nano-banana-2")
            .unwrap()
            .clone()
    }

    #[test]
    fn sizes_map_to_the_nearest_ratio_and_the_smallest_resolution_that_is_big_enough() {
        let pro = ModelCatalog::built_in()
            .find("gemini-3-pro-image")
            .unwrap()
            .clone();
        for (width, height, ratio, resolution) in [
            (1024, 1024, "1:1", "1K"),
            (1536, 1024, "3:2", "1K"),
            (1024, 1536, "2:3", "1K"),
            (1792, 1024, "16:9", "1K"),
            (1024, 1792, "9:16", "1K"),
            (2048, 2048, "1:1", "2K"),
            (2560, 1440, "16:9", "2K"),
            (3840, 2160, "16:9", "4K"),
            (8192, 8192, "1:1", "4K"),
            (256, 256, "1:1", "1K"),
            (2520, 1080, "21:9", "2K"),
            (1000, 800, "5:4", "1K"),
        ] {
            let (got_ratio, got_resolution) = pro.shape_for_size(width, height);
            assert_eq!(
                (got_ratio.to_string().as_str(), got_resolution.as_str()),
                (ratio, resolution),
                "{width}x{height}"
            );
        }
        // 3.1 Flash has 512 and the very wide ratios.
        let flash = flash();
        assert_eq!(flash.shape_for_size(256, 256).1, Resolution::Px512);
        assert_eq!(flash.shape_for_size(512, 512).1, Resolution::Px512);
        assert_eq!(flash.shape_for_size(1024, 1024).1, Resolution::K1);
        assert_eq!(flash.shape_for_size(4096, 512).0.to_string(), "8:1");
        assert_eq!(flash.shape_for_size(1024, 4096).0.to_string(), "1:4");
    }

    #[test]
    fn ratios_and_resolutions_are_written_as_google_writes_them() {
        assert_eq!(AspectRatio::parse("21:9").unwrap().to_string(), "21:9");
        for bad in ["16x9", "0:1", "1:", ":1", "+1:1", "1:1:1", "a:b", ""] {
            assert!(AspectRatio::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Resolution::parse("4K").unwrap(), Resolution::K4);
        for bad in ["4k", "1k", "8K", "1024", ""] {
            assert!(Resolution::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_built_in_catalog_has_the_current_models_and_their_limits() {
        let catalog = ModelCatalog::built_in();
        let flash = catalog.find("gemini-3.1-flash-image").unwrap();
        assert_eq!(flash.aspect_ratios.len(), 14);
        assert_eq!(flash.resolution_list(), "1K, 512, 2K, 4K");
        assert_eq!(flash.default_resolution(), Resolution::K1);
        assert_eq!(flash.max_input_images, 14);
        let pro = catalog.find("nano-banana-pro").unwrap();
        assert_eq!(
            (pro.aspect_ratios.len(), pro.resolution_list().as_str()),
            (10, "1K, 2K, 4K")
        );
        let lite = catalog.find("gemini-3.1-flash-lite-image").unwrap();
        assert_eq!(lite.resolutions, [Resolution::K1]);
        let old = catalog.find("nano-banana").unwrap();
        assert_eq!(old.id, "gemini-2.5-flash-image");
        assert_eq!(old.max_input_images, 3);
        assert!(old.is_retired_on(date!(2026 - 10 - 02)));
        assert!(!old.is_retired_on(date!(2026 - 10 - 01)));
        assert_eq!(old.replaced_by.as_deref(), Some("gemini-3.1-flash-image"));
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_names_and_new_entries_are_added() {
        let catalog = ModelCatalog::with_patches(vec![
            ModelPatch {
                id: "gemini-3-pro-image".into(),
                resolutions: Some(vec!["2K".into(), "4K".into()]),
                retired_at: Some(date!(2027 - 06 - 30)),
                replaced_by: Some("gemini-3.1-flash-image".into()),
                ..ModelPatch::default()
            },
            ModelPatch {
                id: "gemini-nano-banana-2.1".into(),
                aliases: Some(vec!["nb21".into()]),
                aspect_ratios: Some(vec!["1:1".into(), "16:9".into()]),
                resolutions: Some(vec!["1K".into(), "2K".into(), "4K".into()]),
                max_input_images: Some(14),
                ..ModelPatch::default()
            },
        ])
        .unwrap();
        let pro = catalog.find("gemini-3-pro-image").unwrap();
        assert_eq!(pro.default_resolution(), Resolution::K2);
        assert_eq!(pro.aspect_ratios.len(), 10, "untouched");
        assert_eq!(pro.aliases, ["nano-banana-pro"], "untouched");
        assert_eq!(pro.retired_at, Some(date!(2027 - 06 - 30)));
        assert_eq!(catalog.find("nb21").unwrap().id, "gemini-nano-banana-2.1");
    }

    #[test]
    fn catalog_errors_name_the_entry_and_the_field() {
        let error = |patch: ModelPatch| ModelCatalog::with_patches(vec![patch]).unwrap_err();
        let bad_resolution = error(ModelPatch {
            id: "gemini-3-pro-image".into(),
            resolutions: Some(vec!["8K".into()]),
            ..ModelPatch::default()
        });
        assert_eq!(
            (bad_resolution.entry.as_str(), bad_resolution.field),
            ("gemini-3-pro-image", "resolutions")
        );
        let missing = error(ModelPatch {
            id: "new-model".into(),
            aspect_ratios: Some(vec!["1:1".into()]),
            resolutions: Some(vec!["1K".into()]),
            ..ModelPatch::default()
        });
        assert_eq!(
            (missing.entry.as_str(), missing.field),
            ("new-model", "max_input_images")
        );
        let taken_alias = error(ModelPatch {
            id: "gemini-3.1-flash-lite-image".into(),
            aliases: Some(vec!["nano-banana-pro".into()]),
            ..ModelPatch::default()
        });
        assert_eq!(taken_alias.field, "aliases");
        let imagen_edits = error(ModelPatch {
            id: "imagen-4.0-generate-001".into(),
            max_input_images: Some(2),
            ..ModelPatch::default()
        });
        assert_eq!(imagen_edits.field, "max_input_images");
        let unknown_replacement = error(ModelPatch {
            id: "gemini-3-pro-image".into(),
            replaced_by: Some("gemini-9".into()),
            ..ModelPatch::default()
        });
        assert_eq!(unknown_replacement.field, "replaced_by");
        let bad_ratio = error(ModelPatch {
            id: "gemini-3-pro-image".into(),
            aspect_ratios: Some(vec!["16x9".into()]),
            ..ModelPatch::default()
        });
        assert_eq!(bad_ratio.field, "aspect_ratios");
        for fallback in ["gemini-9-chat", "gemini-3-pro-image"] {
            let bad_fallback = error(ModelPatch {
                id: "gemini-3-pro-image".into(),
                fallbacks: Some(vec![fallback.into()]),
                ..ModelPatch::default()
            });
            assert_eq!(bad_fallback.field, "fallbacks", "{fallback}");
        }
    }
}

#[cfg(test)]
mod price_tests {
    use super::*;

    fn price(input: f64, image_in: f64, image_out: f64, text_out: f64) -> ModelPrice {
        let per_million = |dollars| TokenPrice::per_million_tokens(dollars).unwrap();
        ModelPrice {
            input_text: per_million(input),
            input_image: per_million(image_in),
            output_image: per_million(image_out),
            output_text: per_million(text_out),
            batch_discount_ppm: 500_000,
            per_image: BTreeMap::from([
                (Resolution::K1, Usd::parse("0.067").unwrap()),
                (Resolution::K4, Usd::parse("0.151").unwrap()),
            ]),
        }
    }

    fn usage() -> TokenUsage {
        TokenUsage {
            input_tokens: 1_300,
            input_text_tokens: Some(20),
            input_image_tokens: Some(1_280),
            output_tokens: 1_130,
            output_image_tokens: Some(1_120),
            output_text_tokens: Some(10),
            thinking_tokens: 200,
            total_tokens: 2_630,
        }
    }

    #[test]
    fn every_kind_of_token_is_priced_at_its_own_rate() {
        // Distinct prices, so a token counted at the wrong rate changes the sum.
        let price = price(1.0, 2.0, 60.0, 3.0);
        let cost = price.cost(Some(&usage()), Resolution::K1);
        // 20 × 1 + 1280 × 2 + 1120 × 60 + 10 × 3 + 200 × 3 micro-dollars.
        let micros = 20 + 1_280 * 2 + 1_120 * 60 + 10 * 3 + 200 * 3;
        assert_eq!(cost, Usd::from_nanos(micros * 1_000));
        assert_eq!(cost.to_string(), "0.070410");
    }

    #[test]
    fn tokens_of_no_reported_modality_are_never_priced_as_text_output() {
        let price = price(1.0, 2.0, 60.0, 3.0);
        let unsplit = TokenUsage {
            input_text_tokens: None,
            input_image_tokens: None,
            output_image_tokens: None,
            output_text_tokens: None,
            thinking_tokens: 0,
            ..usage()
        };
        // Prompt at the text rate, candidates at the image rate.
        assert_eq!(
            price.cost(Some(&unsplit), Resolution::K1),
            Usd::from_nanos((1_300 + 1_130 * 60) * 1_000)
        );
        // Part split: the rest of the prompt is text; the rest of the candidates image.
        let partly = TokenUsage {
            input_image_tokens: None,
            output_text_tokens: None,
            ..usage()
        };
        assert_eq!(
            price.cost(Some(&partly), Resolution::K1),
            Usd::from_nanos((1_300 + 1_130 * 60 + 200 * 3) * 1_000)
        );
    }

    #[test]
    fn without_usage_an_image_costs_its_per_image_price() {
        let price = price(0.5, 0.5, 60.0, 3.0);
        assert_eq!(price.cost(None, Resolution::K1).to_string(), "0.067000");
        assert_eq!(price.cost(None, Resolution::K4).to_string(), "0.151000");
        // No price at that resolution: the highest the model has (an estimate errs high).
        assert_eq!(price.cost(None, Resolution::K2).to_string(), "0.151000");
        let unpriced = ModelPrice {
            per_image: BTreeMap::new(),
            ..price.clone()
        };
        assert_eq!(unpriced.cost(None, Resolution::K1), Usd::ZERO);
        // Usage that counted the prompt only: the prompt plus the image's per-image price.
        let prompt_only = TokenUsage {
            input_tokens: 10,
            input_text_tokens: None,
            input_image_tokens: None,
            output_tokens: 0,
            output_image_tokens: None,
            output_text_tokens: None,
            thinking_tokens: 0,
            total_tokens: 10,
        };
        assert_eq!(
            price.cost(Some(&prompt_only), Resolution::K1),
            Usd::from_nanos(67_000_000 + 5_000)
        );
    }

    #[test]
    fn the_estimate_is_the_per_image_price_times_the_images() {
        let price = price(0.5, 0.5, 60.0, 3.0);
        assert_eq!(price.estimate(Resolution::K4, 3).to_string(), "0.453000");
        assert_eq!(price.estimate(Resolution::K2, 3).to_string(), "0.453000");
    }

    #[test]
    fn sums_of_ten_thousand_costs_lose_nothing_to_rounding() {
        // 7 prompt tokens at $0.50 per million: 3.5 micro-dollars each, which a micro-dollar
        // store would round to 3 or 4 (off by 5,000 micro-dollars over 10,000 generations).
        let price = price(0.5, 0.5, 60.0, 3.0);
        let one = TokenUsage {
            input_tokens: 7,
            input_text_tokens: Some(7),
            input_image_tokens: None,
            output_tokens: 1_120,
            output_image_tokens: Some(1_120),
            output_text_tokens: None,
            thinking_tokens: 0,
            total_tokens: 1_127,
        };
        let total: Usd = (0..10_000)
            .map(|_| price.cost(Some(&one), Resolution::K1))
            .sum();
        assert_eq!(total.to_string(), "672.035000");
    }

    #[test]
    fn every_built_in_image_costs_its_output_tokens_at_the_output_image_price() {
        // Output image tokens per image, from UPSTREAMS.md (Flash-Lite inferred, see
        // docs/pricing.md); Imagen is priced per image only.
        let tokens: [(&str, &[(Resolution, u64)]); 4] = [
            (
                "gemini-3.1-flash-image",
                &[
                    (Resolution::Px512, 747),
                    (Resolution::K1, 1120),
                    (Resolution::K2, 1680),
                    (Resolution::K4, 2520),
                ],
            ),
            (
                "gemini-3-pro-image",
                &[
                    (Resolution::K1, 1120),
                    (Resolution::K2, 1120),
                    (Resolution::K4, 2000),
                ],
            ),
            ("gemini-3.1-flash-lite-image", &[(Resolution::K1, 1120)]),
            ("gemini-2.5-flash-image", &[(Resolution::K1, 1290)]),
        ];
        let catalog = ModelCatalog::built_in();
        for (id, sizes) in tokens {
            let spec = catalog.find(id).unwrap();
            let price = spec.price.as_ref().unwrap();
            assert_eq!(spec.resolutions.len(), sizes.len(), "{id}");
            for (resolution, output_tokens) in sizes {
                assert_eq!(
                    price.per_image.get(resolution),
                    Some(&price.output_image.times(*output_tokens)),
                    "{id} at {}",
                    resolution.as_str()
                );
            }
            // Every token price was read (a misspelt constant would be 0).
            for token in [price.input_text, price.input_image, price.output_text] {
                assert!(token.times(1_000_000) > Usd::ZERO, "{id}");
            }
        }
        let imagen = catalog.find("imagen-4.0-generate-001").unwrap();
        let per_image = &imagen.price.as_ref().unwrap().per_image;
        assert_eq!(per_image.len(), 2);
        assert!(per_image.values().all(|usd| usd.to_string() == "0.040000"));
    }
}
