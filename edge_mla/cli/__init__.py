"""The `edge-mla` command: thin subcommands over the library (Polygraphy style)."""
