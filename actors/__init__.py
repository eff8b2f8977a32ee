"""The Ray Data stages as plain classes (no Ray import): call them on an Arrow table.

``actors.tokenize.Tokenize``, ``actors.embed.Embed``, ``actors.classify.Classify``; shared
column names and helpers in ``actors.common`` (light: importing it loads no model code).
"""
