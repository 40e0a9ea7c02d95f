"""Small helpers to build a self-contained HTML page (escaped text, tables, embedded PNGs)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d232a;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d8dee4;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
td,th{border:1px solid #d8dee4;padding:.25rem .6rem;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
.muted{color:#59636e}.big{font-size:1.6rem;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
code{background:#f3f5f7;padding:.1rem .3rem;border-radius:3px}
"""


def escape(value: object) -> str:
    return html.escape(str(value))


def table(header: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_table(items: dict) -> str:
    return table(["setting", "value"], [(key, value) for key, value in items.items()])


def embedded_png(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def page(title: str, sections: list[str]) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
