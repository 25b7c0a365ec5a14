//! A BERT sequence classifier in candle, with Hugging Face tensor names and a LayerNorm that has a gradient.
