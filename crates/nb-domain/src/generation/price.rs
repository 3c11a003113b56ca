//! What a model's images cost: its prices as Google bills them (per million tokens, by kind
//! of token, and per image for when Google counts nothing), the cost of one generation, and
//! the estimate a budget reserves before the call. The one place the cost formula lives.

use std::collections::BTreeMap;

use super::catalog::Resolution;
use super::model::TokenUsage;
use crate::money::{TokenPrice, Usd};

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
}
