"""The README stays true: its quickstart is the two commands, and its configuration table
names every setting the processes read."""

from pathlib import Path

from bootstrap.settings import ApiSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_quickstart_is_make_up_and_make_test():
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make up" in quickstart and "make test" in quickstart


def test_every_setting_is_in_the_configuration_table():
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [
        name.upper() for name in ApiSettings.model_fields if f"`{name.upper()}`" not in table
    ]
    assert missing == [], f"document these settings in README.md: {missing}"
