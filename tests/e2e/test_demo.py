"""`make run` tells its whole story on a fresh machine: run the demo itself, headless, to the end."""

from __future__ import annotations

import pytest

from local import run


@pytest.mark.dovecot
def test_the_demo_tells_the_story_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--api-port", "0", "--speed", "60", "--auto", "--exit-after-story"]) == 0
    out = capsys.readouterr().out
    for line in (
        "signed in alice@gmail.example",
        "signed in olivia@contoso.example",
        "signed in carl@mail.acme.example",
        "the reconnect worker has connected every inbox",
        "SENT  alice@gmail.example",
        "the Gmail inbox is disconnected and its notices are out",
        "SNS   inbox.disconnected",
        "STORY reconnecting headless: alice@gmail.example is connected",
        "the reconnect worker has caught up and connected the Gmail inbox",
        "is replied: no follow-up will go",
        "stopped cleanly",
    ):
        assert line in out, f"the demo never said {line!r}"
