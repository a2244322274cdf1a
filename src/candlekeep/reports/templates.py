"""The message's two bodies. Styles are inline: many mail clients drop ``<style>`` blocks.

Kept in Python rather than as package files so an installed wheel needs no package-data
entry to find them. Every value is escaped (autoescape): job names, symbols and errors come
from exchanges and programs, not from us.
"""

HTML = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ subject }}</title></head>
<body style="margin:0;padding:0;background:#f6f8fa;">
<div style="max-width:980px;margin:0 auto;padding:24px 16px;font-family:-apple-system,\
'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;line-height:1.4;color:#1f2328;">
<h1 style="font-size:20px;margin:0 0 4px;">{{ title }}</h1>
<p style="margin:0 0 16px;color:#57606a;">{{ window }}</p>
<p style="margin:0 0 20px;">
{%- for s in sections if s.headline %}
<span style="display:inline-block;margin:0 6px 6px 0;padding:3px 10px;border-radius:12px;\
background:#ffebe9;color:#a40e26;font-weight:600;">{{ s.headline }}</span>
{%- else %}
<span style="display:inline-block;padding:3px 10px;border-radius:12px;background:#dafbe1;\
color:#116329;font-weight:600;">All well</span>
{%- endfor %}
</p>
{% for s in sections %}
<div style="background:#ffffff;border:1px solid #d0d7de;border-radius:6px;padding:16px;\
margin:0 0 16px;">
<h2 style="font-size:16px;margin:0 0 4px;">{{ s.title }}</h2>
{% if s.note %}<p style="margin:0 0 10px;color:#57606a;font-size:12px;">{{ s.note }}</p>{% endif %}
{% if s.chart_cid %}<img src="cid:{{ s.chart_cid }}" alt="{{ s.chart_alt }}" \
width="{{ s.chart_width }}" style="display:block;max-width:100%;height:auto;margin:0 0 10px;">
{% endif %}
{% if s.error %}
<p style="margin:0;color:#a40e26;">This section could not be read: {{ s.error }}</p>
{% elif not s.rows %}
<p style="margin:0;color:#57606a;">{{ s.empty }}</p>
{% else %}
<table cellspacing="0" cellpadding="0" style="border-collapse:collapse;width:100%;\
font-size:13px;">
<tr>{% for h in s.headers %}<th style="text-align:{{ h.align }};padding:4px 8px;\
border-bottom:2px solid #d0d7de;white-space:nowrap;">{{ h.text }}</th>{% endfor %}</tr>
{% for row in s.rows %}<tr>{% for c in row %}<td style="text-align:{{ c.align }};\
padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top;\
{% if c.wrap %}word-break:break-word;{% else %}white-space:nowrap;{% endif %}\
{% if c.color %}color:{{ c.color }};font-weight:600;{% endif %}">{{ c.text }}</td>\
{% endfor %}</tr>
{% endfor %}</table>
{% if s.more %}<p style="margin:6px 0 0;color:#57606a;font-size:12px;">\
… and {{ s.more }} more not shown.</p>{% endif %}
{% endif %}
</div>
{% endfor %}
<p style="margin:16px 0 0;color:#8c959f;font-size:12px;">{{ footer }}</p>
</div>
</body>
</html>
"""

TEXT = """\
{{ title }}
{{ window }}
{% for s in sections if s.headline %}
  * {{ s.headline }}
{%- else %}
  All well.
{%- endfor %}
{% for s in sections %}

{{ s.title }}
{{ "=" * s.title|length }}
{% if s.note %}{{ s.note }}
{% endif %}
{% if s.error -%}
This section could not be read: {{ s.error }}
{% elif not s.rows -%}
{{ s.empty }}
{% else -%}
{% for line in s.text_lines %}{{ line }}
{% endfor %}
{%- if s.more %}... and {{ s.more }} more not shown.
{% endif %}
{%- endif %}
{%- endfor %}

{{ '-- ' }}
{{ footer }}
"""
