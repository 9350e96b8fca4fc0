"""``emo-ray report <sweep>``: the paper's tables (1: MAUVE per corpus, 2: generation metrics,
3: ICL accuracy with the pre-trained row) and Figure 1 from a sweep's MLflow runs, with
intervals and tests over training seeds (one value per seed) against MLE and the pre-trained
model, Holm correction, the MDD of each test, headroom and power planning.

    from emo_ray.report import report_and_log
    report = report_and_log("cpu-small", tracking_uri, alpha=0.001)
    print(report.markdown)
"""
from emo_ray.report.render import Report, build_report, report_and_log, sweep_end

__all__ = ["Report", "build_report", "report_and_log", "sweep_end"]
