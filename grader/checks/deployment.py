"""Hidden checks for 07_deployment, gathered from two modules by topic (the course finds an assignment's hidden
checks in one module): grader.checks.deployment_eval and grader.checks.deployment_compress."""
import grader.checks.deployment_compress as _compress
import grader.checks.deployment_eval as _eval

ASSIGNMENT = "07_deployment"
# pytest collects the test functions it finds in this module's namespace, wherever they were defined.
globals().update({name: obj for part in (_compress, _eval) for name, obj in vars(part).items()
                  if name.startswith("test_")})
