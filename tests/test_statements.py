"""One rule for the interpretation statements every hospital reader keeps: bounded, no sign-offs, no repeats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgmae.data.io import read_record
from ecgmae.data.record import MAX_STATEMENTS, STATEMENT_MAX_CHARS, statement_lines
from test_muse import lead_block, muse_xml
from test_sierra import b64, known_signal, sierra_xml


def test_statement_lines_collapse_drop_and_bound() -> None:
    lines = ["  Sinus   rhythm ", "", "Sinus rhythm", "Electronically signed by Dr X on 1/2/2020", "x" * 9000]
    kept = statement_lines(lines)
    assert kept[0] == "Sinus rhythm" and len(kept) == 2
    assert kept[1].startswith("x" * STATEMENT_MAX_CHARS) and len(kept[1]) < STATEMENT_MAX_CHARS + 40
    assert len(statement_lines(f"statement {i}" for i in range(10_000))) == MAX_STATEMENTS


def test_a_muse_export_with_thousands_of_statements_keeps_a_bounded_few(tmp_path: Path) -> None:
    stmts = "".join(
        f"<DiagnosisStatement><StmtFlag>ENDSLINE</StmtFlag><StmtText>finding {i}</StmtText></DiagnosisStatement>"
        for i in range(5000)
    )
    path = tmp_path / "many.xml"
    path.write_text(muse_xml([lead_block("II", np.zeros(100))], extra=f"<Diagnosis>{stmts}</Diagnosis>"))
    statements = read_record(path).meta["statements"]
    assert len(statements) == MAX_STATEMENTS and statements[:2] == ("finding 0", "finding 1")


def test_a_sierra_sign_off_is_dropped_like_a_muse_one(tmp_path: Path) -> None:
    text = sierra_xml(b64(known_signal().astype("<i2").tobytes())).replace(
        "<leftstatement>Sinus rhythm</leftstatement>",
        "<leftstatement>Sinus rhythm</leftstatement></statement><statement><leftstatement>Confirmed by Dr Who"
        "</leftstatement><rightstatement>on 2020-01-01</rightstatement>",
    )
    path = tmp_path / "philips.xml"
    path.write_text(text, encoding="utf-8")
    statements = read_record(path).meta["statements"]
    assert statements == ("Sinus rhythm", "Left axis deviation QRS axis < -30")
    assert not any("Who" in s for s in statements)
