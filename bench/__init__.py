"""The benchmark: the whole system against its floors (`./bench/run`, see README "Performance")."""
