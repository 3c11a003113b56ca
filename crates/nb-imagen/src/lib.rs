//! Google image-model client (Gemini `:generateContent`, Imagen `:predict`): arrives with the generation issue.
