"""Built-in unsupervised domain adaptation components (one module per paper)."""
