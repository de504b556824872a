"""Model sources: the plugin kind that turns ``cfg.model`` into a model (see ``base.Source``)."""
