"""Knowledge distillation: a small student learns a large teacher's soft outputs (logit KD) or
its generated answers (sequence KD), with the retention measured in a teacher-student report."""
