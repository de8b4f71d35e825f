"""Reports: the cohort's Table 1 with statistics and one self-contained HTML page of the run.

``table1`` summarises the validated sample sheet (``stats`` holds its tests and p-value format);
``html`` gathers every stage's outputs into ``results/report.html`` with the help of ``tables``
(HTML tables from the stages' files) and ``figures`` (training curves, thumbnails, data URIs).
"""
