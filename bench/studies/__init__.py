"""Finished studies, kept runnable: each answered one question, and its
result file in bench/results/ says what it found. Run one as
`python -m bench.studies.NAME --help`; they are not sections of
`python -m bench` because nothing here is measured again as the code moves.
"""
