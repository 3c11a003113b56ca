//! Which of our models an OpenAI model name means. Tools hard-code OpenAI's names
//! (`gpt-image-1`, `dall-e-3`): by default every `gpt-image-*`, `chatgpt-image-*` and
//! `dall-e-*` name means the deployment's default model, except OpenAI's economy models
//! (`gpt-image-1-mini`, `dall-e-2`), which mean the cheapest enabled model (by the catalog's
//! prices); `NB_OPENAI_MODEL_MAP` names others
//! (`gpt-image-1=gemini-3-pro-image,dall-e-2=gemini-3.1-flash-lite-image`).

use nb_domain::generation::{AllowedModels, ImageModel, UnknownModel};

/// OpenAI model names that mean the default model unless the map says otherwise.
const OPENAI_NAME_PREFIXES: [&str; 3] = ["gpt-image", "chatgpt-image", "dall-e"];

/// OpenAI's economy models: unless mapped, the cheapest enabled model.
const OPENAI_ECONOMY_NAMES: [&str; 2] = ["gpt-image-1-mini", "dall-e-2"];

/// OpenAI's image model names in use (late 2026), listed by `GET /v1/models` so that
/// `models.retrieve("gpt-image-2")` works.
pub const OPENAI_MODEL_NAMES: [&str; 7] = [
    "gpt-image-2",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "dall-e-3",
    "dall-e-2",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiModelMap {
    /// `(OpenAI name, our model)`, checked against the allowed models at start-up.
    entries: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidModelMap {
    #[error("{entry:?} is not of the form openai-name=model")]
    Malformed { entry: String },
    #[error("{target:?} (for {name:?}) is not one of the enabled models")]
    UnknownTarget { name: String, target: String },
}

impl OpenAiModelMap {
    /// Parses `name=model,name=model`; every target must be an allowed model.
    pub fn parse(raw: &str, models: &AllowedModels) -> Result<Self, InvalidModelMap> {
        let pairs = raw
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .split_once('=')
                    .map(|(name, target)| (name.trim().to_owned(), target.trim().to_owned()))
                    .filter(|(name, target)| !name.is_empty() && !target.is_empty())
                    .ok_or_else(|| InvalidModelMap::Malformed {
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pairs(pairs, models)
    }

    /// `(OpenAI name, our model)` pairs; every target must be an allowed model.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
        models: &AllowedModels,
    ) -> Result<Self, InvalidModelMap> {
        let mut entries = Vec::new();
        for (name, target) in pairs {
            if models.choose(Some(&target)).is_err() {
                return Err(InvalidModelMap::UnknownTarget { name, target });
            }
            entries.push((name, target));
        }
        Ok(Self { entries })
    }

    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Our model for a requested name: one of ours as it is, a mapped OpenAI name, an
    /// unmapped OpenAI name (the default), or the default when none is named.
    pub fn resolve(
        &self,
        requested: Option<&str>,
        models: &AllowedModels,
    ) -> Result<ImageModel, UnknownModel> {
        let Some(name) = requested else {
            return models.choose(None);
        };
        if let Some((_, target)) = self.entries.iter().find(|(alias, _)| alias == name) {
            return models.choose(Some(target));
        }
        match models.choose(Some(name)) {
            Ok(model) => Ok(model),
            Err(_) if OPENAI_ECONOMY_NAMES.contains(&name) => Ok(models.cheapest().clone()),
            Err(_) if OPENAI_NAME_PREFIXES.iter().any(|p| name.starts_with(p)) => {
                models.choose(None)
            }
            Err(unknown) => Err(unknown),
        }
    }

    /// The names the map lists (for `GET /v1/models/{id}`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> AllowedModels {
        AllowedModels::new([
            "gemini-3.1-flash-image".to_owned(),
            "gemini-3-pro-image".to_owned(),
        ])
        .unwrap()
    }

    #[test]
    fn openai_names_mean_the_default_unless_mapped() {
        let map = OpenAiModelMap::parse("gpt-image-1 = gemini-3-pro-image", &models()).unwrap();
        let resolve = |name| map.resolve(name, &models()).map(|m| m.as_str().to_owned());
        assert_eq!(resolve(None).unwrap(), "gemini-3.1-flash-image");
        assert_eq!(
            resolve(Some("gemini-3-pro-image")).unwrap(),
            "gemini-3-pro-image"
        );
        assert_eq!(resolve(Some("gpt-image-1")).unwrap(), "gemini-3-pro-image");
        assert_eq!(
            resolve(Some("gpt-image-1.5")).unwrap(),
            "gemini-3.1-flash-image"
        );
        assert_eq!(resolve(Some("dall-e-3")).unwrap(), "gemini-3.1-flash-image");
        assert_eq!(
            resolve(Some("chatgpt-image-latest")).unwrap(),
            "gemini-3.1-flash-image"
        );
        assert!(resolve(Some("stable-diffusion")).is_err());
    }

    #[test]
    fn openai_economy_names_mean_the_cheapest_enabled_model_unless_mapped() {
        let enabled = |names: &[&str]| {
            AllowedModels::new(names.iter().map(|name| (*name).to_owned())).unwrap()
        };
        // Pro first (the default), then Flash Lite ($0.0336 at 1K) and Flash ($0.0672).
        let models = enabled(&[
            "gemini-3-pro-image",
            "gemini-3.1-flash-image",
            "gemini-3.1-flash-lite-image",
        ]);
        let map = OpenAiModelMap::empty();
        for name in ["gpt-image-1-mini", "dall-e-2"] {
            let model = map.resolve(Some(name), &models).unwrap();
            assert_eq!(model.as_str(), "gemini-3.1-flash-lite-image", "{name}");
        }
        assert_eq!(
            map.resolve(Some("gpt-image-1"), &models).unwrap().as_str(),
            "gemini-3-pro-image"
        );
        // A retiring model is never chosen for it, however cheap.
        let with_retired = enabled(&["gemini-3-pro-image", "gemini-2.5-flash-image"]);
        assert_eq!(
            map.resolve(Some("dall-e-2"), &with_retired)
                .unwrap()
                .as_str(),
            "gemini-3-pro-image"
        );
        // The map still wins.
        let mapped = OpenAiModelMap::parse("dall-e-2=gemini-3-pro-image", &models).unwrap();
        assert_eq!(
            mapped.resolve(Some("dall-e-2"), &models).unwrap().as_str(),
            "gemini-3-pro-image"
        );
    }

    #[test]
    fn a_map_must_name_allowed_models() {
        assert!(matches!(
            OpenAiModelMap::parse("dall-e-3=gemini-z", &models()),
            Err(InvalidModelMap::UnknownTarget { .. })
        ));
        assert!(matches!(
            OpenAiModelMap::parse("dall-e-3", &models()),
            Err(InvalidModelMap::Malformed { .. })
        ));
        assert_eq!(
            OpenAiModelMap::parse(" , ", &models()).unwrap(),
            OpenAiModelMap::empty()
        );
    }
}
