//! llama.cpp pre-tokenizer names (`tokenizer.ggml.pre`) to the regexes that split text.
