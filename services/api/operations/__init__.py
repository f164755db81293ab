"""Operator actions that the JSON routes and the dashboard's forms share (the actions on jobs, which the CLI
uses too, are shared/job_actions.py). Failures are ApiErrors both callers can show as they are."""
