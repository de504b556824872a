"""What touches the export on disk: staging and publishing, canonical bytes, digests, the manifest."""
