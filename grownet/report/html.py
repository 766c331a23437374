"""HTML building blocks: escaping, a tiny template function, tables, figures, the page.

Every value that reaches the page goes through :func:`esc` unless it is :class:`Safe` (HTML
this module or its callers built from escaped parts). Run data (names, class names, paths,
recipe values, command lines) is therefore always escaped; nothing is joined with f-strings.
"""

from __future__ import annotations

import base64
import html
import string
from typing import Any, Iterable, Sequence

__all__ = ["Safe", "esc", "render", "join", "table", "figure", "section", "page", "CSP"]


class Safe(str):
    """A string that is already HTML: :func:`esc` and :func:`render` pass it through."""


def esc(value: Any) -> Safe:
    """``value`` as escaped HTML text (``None`` shows as an em dash); :class:`Safe` unchanged."""
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("&mdash;")
    return Safe(html.escape(str(value), quote=True))


def render(template: str, **fields: Any) -> Safe:
    """Fill ``$name`` placeholders of a trusted ``template`` with escaped ``fields``.

    Raises KeyError for a placeholder without a field (a bug in the caller).
    """
    return Safe(string.Template(template).substitute({k: esc(v) for k, v in fields.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Safe:
    """Concatenate escaped ``parts`` with the trusted separator ``sep``."""
    return Safe(sep.join(esc(p) for p in parts))


def table(headers: Sequence[Any] | None, rows: Iterable[Sequence[Any]], *, numeric: Sequence[int] = (),
          caption: Any = None, css: str = "") -> Safe:
    """An HTML table (no header row when ``headers`` is None); cells are escaped; columns
    whose index is in ``numeric`` align right."""
    num = set(numeric)

    def cells(tag: str, values: Sequence[Any]) -> Safe:
        return join(
            render("<$tag$cls>$v</$tag>", tag=Safe(tag), cls=Safe(' class="num"' if i in num else ""), v=v)
            for i, v in enumerate(values)
        )

    head = render("<thead><tr>$c</tr></thead>", c=cells("th", headers)) if headers is not None else Safe("")
    body = join(render("<tr>$c</tr>", c=cells("td", r)) for r in rows)
    cap = render("<caption>$c</caption>", c=caption) if caption is not None else Safe("")
    return render('<div class="scroll"><table class="$css">$cap$head<tbody>$body</tbody></table></div>',
                  css=css, cap=cap, head=head, body=body)


def figure(svg: str, *, alt: Any, caption: Any = None, css: str = "") -> Safe:
    """An ``<img>`` holding ``svg`` as a base64 data URI (no request to any host; element ids
    of different figures cannot clash), with an optional caption."""
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    cap = render("<figcaption>$c</figcaption>", c=caption) if caption is not None else Safe("")
    return render('<figure class="$css"><img src="$uri" alt="$alt">$cap</figure>', css=css, uri=uri, alt=alt, cap=cap)


def section(anchor: str, title: Any, body: Any, *, intro: Any = None) -> Safe:
    """A titled ``<section id=anchor>``; ``intro`` is an escaped paragraph under the title."""
    para = render('<p class="intro">$t</p>', t=intro) if intro is not None else Safe("")
    return render('<section id="$a"><h2>$t</h2>$p$b</section>', a=anchor, t=title, p=para, b=body)


#: Content-Security-Policy of every page: nothing may be fetched from anywhere, images only as
#: data URIs, styles only inline. A browser therefore refuses any request to another host.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d8dce3; --bg:#ffffff; --panel:#f5f7fa; --accent:#1f5fbf; }
* { box-sizing: border-box; }
html { font-size: 15px; }
body { margin: 0; color: var(--fg); background: var(--bg);
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       line-height: 1.45; }
main { max-width: 1080px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
header h1 { font-size: 1.6rem; margin: 0.4rem 0 0.2rem; word-break: break-word; }
header p { margin: 0 0 0.6rem; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 1; background: var(--bg); border-bottom: 1px solid var(--line);
      padding: 0.4rem 0; margin-bottom: 0.8rem; font-size: 0.9rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 0.9rem; white-space: nowrap; }
h2 { font-size: 1.25rem; margin: 2rem 0 0.5rem; padding-bottom: 0.2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.02rem; margin: 1.1rem 0 0.4rem; }
p.intro, p.note { color: var(--muted); margin: 0.3rem 0 0.7rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 0.6rem; margin: 0.6rem 0 1rem; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 0.55rem 0.75rem; }
.card .k { font-size: 0.78rem; color: var(--muted); text-transform: uppercase; letter-spacing: 0.03em; }
.card .v { font-size: 1.3rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.4rem 0 0.9rem; font-size: 0.88rem; width: auto; }
caption { text-align: left; color: var(--muted); padding-bottom: 0.25rem; }
th, td { border-bottom: 1px solid var(--line); padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; }
table.kv td { word-break: break-word; }
tr.highlight td { font-weight: 600; background: #eef4ff; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.84rem; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 0.6rem 0.8rem;
      white-space: pre-wrap; word-break: break-word; }
pre.columns { column-width: 16rem; column-gap: 2rem; }
figure { margin: 0.6rem 0 1.2rem; }
figure img { display: block; width: 100%; max-width: 980px; height: auto; }
figure.half img { max-width: 640px; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1rem; }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 0.2rem; }
.warn { background: #fff6e0; border: 1px solid #f0d48a; border-radius: 6px; padding: 0.4rem 0.7rem; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 0.8rem; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  html { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  nav { display: none; }
  .cards { grid-template-columns: repeat(6, 1fr); gap: 0.3rem; }
  .card .v { font-size: 1.05rem; }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, table, .cards, pre { break-inside: avoid; page-break-inside: avoid; }
  .scroll { overflow: visible; }
  figure img { max-width: 100%; }
  a { color: inherit; text-decoration: none; }
}
"""


def page(title: Any, *, subtitle: Any, nav: Sequence[tuple[str, str]], body: Any, footer: Any) -> Safe:
    """A complete self-contained HTML document: inline CSS, a CSP that forbids any fetch, a
    sticky section menu (``nav``: ``(anchor, label)`` pairs) hidden when printing."""
    links = join(render('<a href="#$a">$l</a>', a=a, l=l) for a, l in nav)
    return render(
        """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<main>
<header><h1>$title</h1><p>$subtitle</p></header>
<nav>$links</nav>
$body
<footer>$footer</footer>
</main>
</body>
</html>
""",
        csp=CSP, title=title, css=Safe(_CSS), subtitle=subtitle, links=links, body=body, footer=footer,
    )
