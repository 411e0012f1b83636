"""Visible checks for 07_deployment: what `check("07_deployment/<exercise>")` runs in your notebook.

The checks live in two modules by topic, gathered here (the course finds an assignment's checks in one module):
- llmcourse.checks.deployment_eval: perplexity, BLEU, multiple choice, distillation, scaling laws;
- llmcourse.checks.deployment_compress: memory, quantisation, the quantised layer, pruning.
More checks run when your notebook is graded.
"""
import llmcourse.checks.deployment_compress as _compress
import llmcourse.checks.deployment_eval as _eval

ASSIGNMENT = "07_deployment"
# pytest collects the test functions it finds in this module's namespace, wherever they were defined.
globals().update({name: obj for part in (_compress, _eval) for name, obj in vars(part).items()
                  if name.startswith("test_")})
