"""Textual screens and widgets. The only layer (with app.py and cli.py) that imports textual."""
