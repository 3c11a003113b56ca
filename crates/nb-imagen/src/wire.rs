//! Request bodies, exactly as the official SDKs send them (google-genai 3.x: camelCase,
//! but `mime_type` in snake_case inside `inlineData`, and image bytes in URL-safe base64
//! with padding; no `imageConfig` when no aspect ratio is asked for).

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use nb_domain::generation::{
    AspectRatio, ConversationTurn, ImageFormat, InputImage, ModelTurnContent, OutputEncoding,
    Resolution,
};
use serde::Serialize;

/// Raw bytes of an image encoded at a time while the body is sent: a multiple of 3, so that
/// the pieces of base64 join into the image's base64 exactly (padding only at its end).
const ENCODED_AT_A_TIME: usize = 48 * 1024;

/// A request body in pieces: JSON, and images base64-encoded (URL-safe, padded, as the SDK
/// sends them) a piece at a time as the body is sent. The same bytes as serializing the whole
/// request with the images' base64 inside it, but a call never holds an image's base64 whole
/// (a 7 MB image is 9.3 MB of base64, per attempt and per image asked for). Cheap to clone:
/// each attempt sends it afresh.
#[derive(Clone)]
pub(crate) struct RequestBody {
    pieces: Arc<[Piece]>,
}

#[derive(Clone)]
enum Piece {
    Json(Bytes),
    Image(Bytes),
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// A body of JSON alone.
    pub fn json(json: Vec<u8>) -> Self {
        Self {
            pieces: Arc::new([Piece::Json(Bytes::from(json))]),
        }
    }

    /// `request` serialized, with each image's base64 in place of its empty `data`. In the
    /// serialized JSON an unescaped `"data":""` can only be an image's (quotes inside string
    /// values are escaped), and there is one per image, in order.
    pub fn generate_content(
        request: &GenerateContentRequest<'_>,
        images: &[InputImage],
    ) -> serde_json::Result<Self> {
        const EMPTY_DATA: &[u8] = br#""data":"""#;
        let json = serde_json::to_vec(request)?;
        let mut pieces = Vec::with_capacity(2 * images.len() + 1);
        let mut rest = json.as_slice();
        for image in images {
            let Some(at) = memchr::memmem::find(rest, EMPTY_DATA) else {
                return Err(serde::ser::Error::custom("an image's data is missing"));
            };
            // Up to and including `"data":"`, then the image, then the closing quote onward.
            let (before, after) = rest.split_at(at + EMPTY_DATA.len() - 1);
            pieces.push(Piece::Json(Bytes::copy_from_slice(before)));
            pieces.push(Piece::Image(image.bytes().clone()));
            rest = after;
        }
        pieces.push(Piece::Json(Bytes::copy_from_slice(rest)));
        Ok(Self {
            pieces: pieces.into(),
        })
    }

    /// Its length in bytes, exactly (for `Content-Length`).
    pub fn len(&self) -> u64 {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Json(json) => json.len() as u64,
                Piece::Image(image) => image.len().div_ceil(3) as u64 * 4,
            })
            .sum()
    }

    /// The body as it is sent: the pieces in order, images encoded as they are reached.
    pub fn stream(&self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let pieces = self.pieces.clone();
        let chunks = (0..pieces.len()).flat_map(move |index| {
            let piece = pieces[index].clone();
            let (json, image) = match piece {
                Piece::Json(json) => (Some(json), Bytes::new()),
                Piece::Image(image) => (None, image),
            };
            let encoded = (0..image.len())
                .step_by(ENCODED_AT_A_TIME)
                .map(move |start| {
                    let end = (start + ENCODED_AT_A_TIME).min(image.len());
                    Bytes::from(
                        base64::engine::general_purpose::URL_SAFE.encode(&image[start..end]),
                    )
                });
            json.into_iter().chain(encoded)
        });
        futures_util::stream::iter(chunks.map(Ok))
    }

    /// The whole body at once (tests, and answers small enough not to matter).
    #[cfg(test)]
    pub async fn collect(&self) -> Vec<u8> {
        use futures_util::StreamExt as _;
        let mut body = Vec::new();
        let mut stream = std::pin::pin!(self.stream());
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
        }
        body
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest<'a> {
    /// Earlier turns (user, model, user, model, …), then the new user turn.
    pub contents: Vec<Content<'a>>,
    pub generation_config: GenerationConfig,
}

#[derive(Serialize)]
pub(crate) struct Content<'a> {
    pub parts: Vec<Part<'a>>,
    pub role: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Part<'a> {
    Text {
        text: &'a str,
        /// On a model turn sent back: the signature Google gave the part.
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'a str>,
    },
    Image {
        #[serde(rename = "inlineData")]
        inline_data: InlineData,
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'a str>,
    },
}

fn image_part<'a>(image: &InputImage, thought_signature: Option<&'a str>) -> Part<'a> {
    Part::Image {
        inline_data: InlineData {
            data: String::new(),
            mime_type: image.format().mime_type(),
        },
        thought_signature,
    }
}

/// A user turn: its text, then its images.
fn user_turn<'a>(text: &'a str, images: &[InputImage]) -> Content<'a> {
    let mut parts = Vec::with_capacity(1 + images.len());
    parts.push(Part::Text {
        text,
        thought_signature: None,
    });
    parts.extend(images.iter().map(|image| image_part(image, None)));
    Content {
        parts,
        role: "user",
    }
}

/// Every image of the request in the order the body holds them: each earlier turn's user
/// images then its model image, then the new turn's images.
pub(crate) fn images_in_order(
    history: &[ConversationTurn],
    images: &[InputImage],
) -> Vec<InputImage> {
    let mut all = Vec::new();
    for turn in history {
        all.extend(turn.images.iter().cloned());
        all.extend(
            turn.model_parts
                .iter()
                .filter_map(|part| match &part.content {
                    ModelTurnContent::Image(image) => Some(image.clone()),
                    ModelTurnContent::Text(_) => None,
                }),
        );
    }
    all.extend(images.iter().cloned());
    all
}

#[derive(Serialize)]
pub(crate) struct InlineData {
    pub data: String,
    pub mime_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig {
    pub response_modalities: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Only when not the model's default, as google-genai sends it when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<&'static str>,
    /// Vertex AI only: the format (and quality) the image is made in, as google-genai sends
    /// `output_mime_type` / `output_compression_quality` in Vertex mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_output_options: Option<ImageOutputOptions>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageOutputOptions {
    pub mime_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_quality: Option<u8>,
}

impl<'a> GenerateContentRequest<'a> {
    /// Asks Vertex AI for the image in `output`'s format (PNG, JPEG or WebP).
    pub fn with_output(mut self, output: Option<OutputEncoding>) -> Self {
        if let Some(output) = output {
            let options = ImageOutputOptions {
                mime_type: output.format.mime_type(),
                compression_quality: (output.format != ImageFormat::Png).then_some(output.quality),
            };
            match &mut self.generation_config.image_config {
                Some(config) => config.image_output_options = Some(options),
                None => {
                    self.generation_config.image_config = Some(ImageConfig {
                        aspect_ratio: None,
                        image_size: None,
                        image_output_options: Some(options),
                    });
                }
            }
        }
        self
    }

    /// The prompt, then each image in order, each image's `data` left empty: the body is
    /// assembled around them by [`RequestBody::generate_content`].
    pub fn new(
        prompt: &'a str,
        aspect_ratio: Option<AspectRatio>,
        image_size: Option<Resolution>,
        images: &[InputImage],
        history: &'a [ConversationTurn],
    ) -> Self {
        let mut contents = Vec::with_capacity(2 * history.len() + 1);
        for turn in history {
            contents.push(user_turn(&turn.text, &turn.images));
            contents.push(Content {
                parts: turn
                    .model_parts
                    .iter()
                    .map(|part| {
                        let signature = part.thought_signature.as_deref();
                        match &part.content {
                            ModelTurnContent::Image(image) => image_part(image, signature),
                            ModelTurnContent::Text(text) => Part::Text {
                                text,
                                thought_signature: signature,
                            },
                        }
                    })
                    .collect(),
                role: "model",
            });
        }
        contents.push(user_turn(prompt, images));
        Self {
            contents,
            generation_config: GenerationConfig {
                response_modalities: ["IMAGE"],
                image_config: (aspect_ratio.is_some() || image_size.is_some()).then(|| {
                    ImageConfig {
                        aspect_ratio: aspect_ratio.map(|ratio| ratio.to_string()),
                        image_size: image_size.map(Resolution::as_str),
                        image_output_options: None,
                    }
                }),
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct PredictRequest<'a> {
    pub instances: [PredictInstance<'a>; 1],
    pub parameters: PredictParameters,
}

#[derive(Serialize)]
pub(crate) struct PredictInstance<'a> {
    pub prompt: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PredictParameters {
    /// Imagen defaults to 4 images (4 times the cost): always ask for one.
    pub sample_count: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Imagen's own name for the resolution (`1K`, `2K`), as google-genai sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_image_size: Option<&'static str>,
    pub output_options: OutputOptions,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OutputOptions {
    pub mime_type: &'static str,
}

impl<'a> PredictRequest<'a> {
    pub fn new(
        prompt: &'a str,
        aspect_ratio: Option<AspectRatio>,
        image_size: Option<Resolution>,
    ) -> Self {
        Self {
            instances: [PredictInstance { prompt }],
            parameters: PredictParameters {
                sample_count: 1,
                aspect_ratio: aspect_ratio.map(|ratio| ratio.to_string()),
                sample_image_size: image_size.map(Resolution::as_str),
                output_options: OutputOptions {
                    mime_type: "image/png",
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An earlier turn goes first, as google-genai's chats send history: the user's text and
    /// images, then the model's parts with their signatures; the images' data in body order.
    #[tokio::test]
    async fn a_conversation_sends_each_earlier_turn_with_its_signatures() {
        use nb_domain::generation::ModelTurnPart;
        let image = |tag: u8| {
            let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
            bytes.push(tag);
            InputImage::from_bytes(Bytes::from(bytes)).unwrap()
        };
        let history = vec![ConversationTurn {
            text: "a cat".into(),
            images: vec![image(1)],
            model_parts: vec![
                ModelTurnPart {
                    content: ModelTurnContent::Text("here it is".into()),
                    thought_signature: Some("c2lnMQ==".into()),
                },
                ModelTurnPart {
                    content: ModelTurnContent::Image(image(2)),
                    thought_signature: Some("c2lnMg==".into()),
                },
            ],
        }];
        let now = vec![image(3)];
        let request = GenerateContentRequest::new("make it blue", None, None, &now, &history);
        let images = images_in_order(&history, &now);
        let body = RequestBody::generate_content(&request, &images).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&body.collect().await).unwrap();
        let b64 = |tag: u8| base64::engine::general_purpose::URL_SAFE.encode(image(tag).bytes());
        assert_eq!(
            sent["contents"],
            serde_json::json!([
                {"role": "user", "parts": [{"text": "a cat"}, {"inlineData": {"data": b64(1), "mime_type": "image/png"}}]},
                {"role": "model", "parts": [
                    {"text": "here it is", "thoughtSignature": "c2lnMQ=="},
                    {"inlineData": {"data": b64(2), "mime_type": "image/png"}, "thoughtSignature": "c2lnMg=="}
                ]},
                {"role": "user", "parts": [{"text": "make it blue"}, {"inlineData": {"data": b64(3), "mime_type": "image/png"}}]}
            ])
        );
    }

    /// The pieces join into the very bytes of the request serialized with the images' base64
    /// inside it, whatever the images' sizes (around the 48 KiB pieces), and even when the
    /// prompt holds the text `"data":""`.
    #[tokio::test]
    async fn the_streamed_body_is_the_serialized_request_byte_for_byte() {
        for sizes in [
            vec![0, 1, 2, 3],
            vec![48 * 1024 - 1, 48 * 1024, 48 * 1024 + 1],
            vec![200_001],
        ] {
            let images: Vec<InputImage> = sizes
                .iter()
                .map(|&size| {
                    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
                    bytes.extend((0..size).map(|n| (n % 251) as u8));
                    InputImage::from_bytes(Bytes::from(bytes)).unwrap()
                })
                .collect();
            let prompt = r#"say "data":"" twice: "data":"""#;
            let request = GenerateContentRequest::new(
                prompt,
                AspectRatio::parse("16:9").ok(),
                None,
                &images,
                &[],
            );
            let body = RequestBody::generate_content(&request, &images).unwrap();
            let streamed = body.collect().await;
            assert_eq!(streamed.len() as u64, body.len());
            let mut whole = request;
            for (part, image) in whole.contents[0].parts[1..].iter_mut().zip(&images) {
                let Part::Image { inline_data, .. } = part else {
                    unreachable!("the prompt comes first, then the images")
                };
                inline_data.data = base64::engine::general_purpose::URL_SAFE.encode(image.bytes());
            }
            assert_eq!(streamed, serde_json::to_vec(&whole).unwrap(), "{sizes:?}");
        }
    }
}
