"""In-context learning (paper 4.2): task configs, retrieval, lowest-perplexity scoring."""
