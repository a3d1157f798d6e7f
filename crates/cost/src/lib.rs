//! Cost planner (issue 4): profiles, price tables, estimates.
