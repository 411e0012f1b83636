"""The instructor side of the course: the trusted grader, its hidden checks, and the `grader` command.

Never installed for students (see setup.py): its checks and reference solutions are the course's secrets.
"""
