//! Configuration: TOML file and command-line overrides.
