"""REPORT.md and a self-contained report.html (figures inlined as base64 PNG) from checked claims."""

from __future__ import annotations

import base64
import html
from collections import Counter
from pathlib import Path

from .claims import FAILS, HOLDS, NOT_COMPARABLE, THRESHOLDS, Claim

MARK = {HOLDS: "✅ holds", FAILS: "❌ does not hold", NOT_COMPARABLE: "➖ not comparable"}
COLOUR = {HOLDS: "#1b7837", FAILS: "#b2182b", NOT_COMPARABLE: "#666666"}


def tally(claims: list[Claim]) -> str:
    """'12 hold, 2 do not hold, 1 not comparable (of 15 claims)'."""
    c = Counter(cl.verdict for cl in claims)
    return (f"{c[HOLDS]} hold, {c[FAILS]} do not hold, {c[NOT_COMPARABLE]} not comparable "
            f"(of {len(claims)} claims)")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(claims: list[Claim]) -> dict[str, list[Claim]]:
    out: dict[str, list[Claim]] = {}
    for c in claims:
        out.setdefault(c.section, []).append(c)
    return out


def _groups(items: list[Claim]) -> dict[str | None, list[Claim]]:
    out: dict[str | None, list[Claim]] = {}
    for c in items:
        out.setdefault(c.group, []).append(c)
    return out


def _failures(claims: list[Claim]) -> list[Claim]:
    return [c for c in claims if c.verdict == FAILS]


def render_markdown(
    claims: list[Claim],
    header: str = "",
    notes: dict[str, list[str]] | None = None,
    headings: dict[str, tuple[str, str]] | None = None,
) -> str:
    """The report as Markdown: a tally and the failing claims with their reasons, then per section a table of
    claims (per group, under ``headings``: {group: (title, line)}, e.g. Table 1's analogues and their regime
    lines), what it ran on (``notes``: {section: lines}) and the section's figures."""
    lines = ["# memaware: the paper's claims, checked on this run", ""]
    if header:
        lines += [header, ""]
    lines += [f"**{tally(claims)}.** Verdict thresholds: `memaware.report.claims.THRESHOLDS` "
              "(docs/report.md explains each).", ""]
    if _failures(claims):
        lines += ["Not holding, and why:", ""]
        lines += [f"- {_cell(c.statement)} {_cell(c.ours)}: {_cell(c.reason)}." for c in _failures(claims)]
        lines.append("")
    for section, items in _sections(claims).items():
        lines += [f"## {section}", ""]
        for group, members in _groups(items).items():
            if group is not None:
                title, regime = (headings or {}).get(group, (f"`{group}`", ""))
                lines += [f"### {title}", ""] + ([regime, ""] if regime else [])
            lines += ["| claim | paper | memaware (this run) | verdict | why | re-run |", "|---|---|---|---|---|---|"]
            for c in members:
                lines.append(f"| {_cell(c.statement)} | {_cell(c.paper)} | {_cell(c.ours)} | {MARK[c.verdict]} | "
                             f"{_cell(c.reason)} | `{c.command}` |")
            lines.append("")
        figures = list(dict.fromkeys(c.figure for c in items if c.figure))
        if (notes or {}).get(section):
            lines += ["Ran on:", ""] + [f"- {line}" for line in notes[section]] + [""]
        lines += [f"![{section}]({f})" for f in figures]
        lines.append("")
    lines += ["## Thresholds", "", "| name | value |", "|---|---|"]
    lines += [f"| `{k}` | {v:g} |" for k, v in THRESHOLDS.items()]
    return "\n".join(lines) + "\n"


def _img(results: Path, name: str) -> str:
    path = results / name
    if not path.is_file():
        return f'<p class="missing">figure {html.escape(name)} was not produced by this run</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"><figcaption>' \
           f"{html.escape(name)}</figcaption></figure>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.verdict { white-space: nowrap; }
.badge { display: inline-block; padding: 0.1em 0.5em; border-radius: 0.7em; color: #fff; font-weight: 600;
         font-size: 0.9em; }
tr.rerun td { border-top: none; background: #fafafa; font-size: 0.85em; color: #555; }
code { font-size: 0.9em; background: #f0f0f0; padding: 0 0.2em; }
figure { display: block; margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #555; }
.missing { color: #b2182b; }
p.regime { background: #f6f6f0; border-left: 4px solid #999; padding: 0.3em 0.6em; }
.summary td:not(:first-child), .summary th:not(:first-child) { text-align: right; width: 12em; }
"""


def _badge(verdict: str) -> str:
    """A coloured label (text, no emoji: a page may be opened where no emoji font is installed)."""
    return f"<span class='badge' style='background:{COLOUR[verdict]}'>{html.escape(verdict)}</span>"


def _summary_html(claims: list[Claim]) -> list[str]:
    """A table of verdict counts per section, so that a reader sees at a glance where the paper held."""
    rows = ["<table class='summary'><tr><th>result</th>" + "".join(f"<th>{_badge(v)}</th>" for v in COLOUR)
            + "</tr>"]
    for section, items in _sections(claims).items():
        counts = Counter(c.verdict for c in items)
        rows.append(f"<tr><td><a href='#{_anchor(section)}'>{html.escape(section)}</a></td>"
                    + "".join(f"<td>{counts[v]}</td>" for v in COLOUR) + "</tr>")
    rows.append("</table>")
    return rows


def _inline_code(line: str) -> str:
    """A Markdown line's `code` spans as <code>, the rest escaped."""
    pieces = html.escape(line).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _anchor(section: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in section.lower())


def _md_bold(line: str) -> str:
    """A line with **bold** spans and `code` spans as HTML, the rest escaped."""
    pieces = line.split("**")
    return "".join(f"<strong>{_inline_code(p)}</strong>" if i % 2 else _inline_code(p) for i, p in enumerate(pieces))


def _claim_rows(items: list[Claim]) -> list[str]:
    rows = ["<table><tr><th>claim</th><th>paper</th><th>memaware (this run)</th><th>verdict</th><th>why</th></tr>"]
    for c in items:
        rows.append(
            f"<tr><td>{html.escape(c.statement)}</td><td>{html.escape(c.paper)}</td>"
            f"<td>{html.escape(c.ours)}</td><td class='verdict'>{_badge(c.verdict)}</td>"
            f"<td>{html.escape(c.reason)}</td></tr>"
            f"<tr class='rerun'><td colspan='5'>re-run: <code>{html.escape(c.command)}</code></td></tr>"
        )
    rows.append("</table>")
    return rows


def render_html(
    claims: list[Claim],
    results: Path,
    header: str = "",
    notes: dict[str, list[str]] | None = None,
    headings: dict[str, tuple[str, str]] | None = None,
) -> str:
    """The report as one HTML page with every figure inlined (opens with no other file beside it)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>memaware report</title>",
             f"<style>{CSS}</style></head><body>", "<h1>memaware: the paper's claims, checked on this run</h1>"]
    if header:
        parts.append(f"<p>{html.escape(header)}</p>")
    parts.append(f"<p><strong>{html.escape(tally(claims))}.</strong> Thresholds: the table at the end; "
                 "docs/report.md explains each.</p>")
    parts += _summary_html(claims)
    if _failures(claims):
        parts.append("<p>Not holding, and why:</p><ul>" + "".join(
            f"<li>{html.escape(c.statement)} <em>{html.escape(c.ours)}</em>: {html.escape(c.reason)}.</li>"
            for c in _failures(claims)) + "</ul>")  # fmt: skip
    for section, items in _sections(claims).items():
        parts.append(f"<h2 id='{_anchor(section)}'>{html.escape(section)}</h2>")
        for group, members in _groups(items).items():
            if group is not None:
                title, regime = (headings or {}).get(group, (f"`{group}`", ""))
                parts.append(f"<h3>{_inline_code(title)}</h3>" + (f"<p class='regime'>{_md_bold(regime)}</p>"
                                                                   if regime else ""))  # fmt: skip
            parts += _claim_rows(members)
        if (notes or {}).get(section):
            parts.append("<p>Ran on:</p><ul>" + "".join(f"<li>{_inline_code(line)}</li>" for line in notes[section])
                         + "</ul>")
        parts += [_img(results, f) for f in dict.fromkeys(c.figure for c in items if c.figure)]
    parts.append("<h2>Thresholds</h2><table><tr><th>name</th><th>value</th></tr>")
    parts += [f"<tr><td><code>{k}</code></td><td>{v:g}</td></tr>" for k, v in THRESHOLDS.items()]
    parts.append("</table></body></html>")
    return "\n".join(parts)


__all__ = ["render_html", "render_markdown", "tally"]
