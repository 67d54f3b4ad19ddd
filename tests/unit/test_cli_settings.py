"""A setting that cannot work stops a `trading` command with one line naming it."""

from worker.cli import main


def test_a_malformed_setting_is_one_line_naming_the_variable_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "mysql://db.example/trading")
    assert main(["migrate", "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trading: DATABASE_URL: ")
    assert "Traceback" not in err


def test_a_plain_http_vendor_url_off_loopback_is_refused_by_name(monkeypatch, capsys):
    monkeypatch.setenv("ALPACA_BASE_URL", "http://paper-api.alpaca.markets")
    assert main(["migrate", "status"]) == 2
    assert capsys.readouterr().err.startswith("trading: ALPACA_BASE_URL: ")
