"""Experiments that answer a question with statistics: each runs resumably into one folder."""
