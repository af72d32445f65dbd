"""The programs around the library: the examples' command-line plumbing, the benchmark, the install doctor."""
