"""What ``python -m exportkit --help`` prints: every config group with every option on disk (the
CLI answers Hydra's repeated group listings from one copy of its repository, see
``exportkit.cli.list_groups_once``)."""
from tests.conftest import ROOT, run_cli


def test_help_lists_every_config_group_with_its_options():
    done = run_cli("--help", check=True)
    groups = done.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in groups.splitlines()
             if line.split(":", 1)[0] in ("experiment", "model", "pipeline", "target")}
    assert set(lines) == {"experiment", "model", "pipeline", "target"}, done.stdout
    for group, listed in lines.items():
        options = {o.strip() for o in listed.split(",")}
        on_disk = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
        assert on_disk and on_disk <= options, (group, on_disk, options)
    assert "== Config ==" in done.stdout and "export_dir:" in done.stdout
