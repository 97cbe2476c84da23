"""After a run: plots and per-sample reports of one run (`analyze`), results tables over
runs and seeds (`report`), a study's tables and figures (`study`), and the figures
themselves (`plots`). Their command lines are `python -m avgmm.analyze`,
`python -m avgmm.report` and `python -m avgmm.study`."""
