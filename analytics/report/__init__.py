"""Report: plotly figure builders (:mod:`analytics.report.plots`) and the self-contained HTML meeting pack
(:mod:`analytics.report.pack`), computed in forked workers by :mod:`analytics.report.parallel`.
"""
