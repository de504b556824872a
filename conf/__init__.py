# Makes conf/ importable as ``exportkit.conf`` (see pyproject.toml) so an installed wheel finds it.
