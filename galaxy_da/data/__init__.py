"""Sharded Parquet datasets: schema, writer, reader, loader, synth, ingest."""
