"""The pipeline's stages, one module each, in the order the default pipeline runs them:
build -> trace -> write_checkpoint -> write_graphs -> convert -> verify."""
