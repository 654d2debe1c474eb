"""relate.mail.display: HTML made safe to show, remote content blocked, cid: images pointed at the API."""

from __future__ import annotations

from relate.mail.display import display_html


def _cid(content_id: str) -> str:
    return f"/parts/{content_id}"


def test_tracking_pixel_loses_its_src_but_keeps_it_for_later() -> None:
    """A remote image keeps its URL only as data-remote-src (no fetch on display); the count says one."""
    shown = display_html('<p>Hi</p><img src="https://t.example/p.gif?u=1&amp;m=2" width="1">', cid_url=_cid)
    assert " src=" not in shown.html
    assert 'data-remote-src="https://t.example/p.gif?u=1&amp;m=2"' in shown.html
    assert shown.remote_blocked == 1


def test_protocol_relative_and_upper_case_urls_are_remote_too() -> None:
    """//host/x and HTTP:// are remote; a relative or data-less image is left alone."""
    shown = display_html('<img src="//t.example/a.png"><img src="HTTP://t.example/b.png">', cid_url=_cid)
    assert shown.remote_blocked == 2
    assert " src=" not in shown.html


def test_remote_urls_in_styles_are_dropped_and_the_rest_kept() -> None:
    """url(), image-set() and CSS escapes go; colours and sizes stay; positioning is never allowed."""
    html = (
        '<table><tr><td style="color: red; background: URL(http://t.example/bg.png); font-size: 12px">a</td></tr>'
        "</table>"
        '<div style="background-image: image-set(&quot;x.png&quot; 1x)">b</div>'
        '<p style="background: \\75 rl(http://t.example/c)">c</p>'
        '<div style="position: fixed; top: 0">d</div>'
    )
    shown = display_html(html, cid_url=_cid)
    assert "t.example" not in shown.html
    assert "url" not in shown.html.lower()
    assert "color:red" in shown.html.replace(" ", "")
    assert "font-size:12px" in shown.html.replace(" ", "")
    assert "position" not in shown.html
    assert shown.remote_blocked == 3


def test_allow_keeps_remote_content() -> None:
    """block_remote=False (the reader asked) leaves remote images and style URLs in place."""
    html = '<img src="https://t.example/p.gif"><p style="background: url(https://t.example/bg.png)">x</p>'
    shown = display_html(html, cid_url=_cid, block_remote=False)
    assert 'src="https://t.example/p.gif"' in shown.html
    assert "bg.png" in shown.html
    assert shown.remote_blocked == 0


def test_cid_images_point_at_the_part() -> None:
    """<img src="cid:..."> (angle brackets or percent-encoding allowed) becomes cid_url(content id)."""
    shown = display_html('<img src="cid:logo@example"><img src="cid:%3Csig%40example%3E">', cid_url=_cid)
    assert 'src="/parts/logo@example"' in shown.html
    assert 'src="/parts/sig@example"' in shown.html
    assert shown.remote_blocked == 0


def test_scripts_handlers_and_tricky_attributes() -> None:
    """Scripts, handlers and style sheets go; an alt holding '>' or a quote does not hide a remote src."""
    html = (
        "<script>alert(1)</script><style>@import url(https://t.example/s.css)</style>"
        '<link rel="stylesheet" href="https://t.example/s.css">'
        '<img alt="a > b &quot; src=&quot;x" onerror="alert(2)" src="https://t.example/p.gif">'
    )
    shown = display_html(html, cid_url=_cid)
    assert "alert" not in shown.html
    assert "s.css" not in shown.html
    assert ' src="' not in shown.html
    assert 'data-remote-src="https://t.example/p.gif"' in shown.html
    assert shown.remote_blocked == 1
