"""DiffX models: MP-VAE, layout tokenizers, JME, UNet, text encoders (one model per file)."""
