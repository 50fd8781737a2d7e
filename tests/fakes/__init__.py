"""Stand-ins for llama-server that tests can start as real child processes."""
