"""What every command shares: reading catalogs and taxonomies, the encoder and its embedding cache, the
vector index, and writing files and workbook sheets. Depends on models/ (the encoders) and migrate.errors only."""
