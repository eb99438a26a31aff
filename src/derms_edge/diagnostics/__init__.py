"""``derms-edge doctor``'s checks, away from the command line: each is a function that
returns `Check` results (a mark, what was checked, and what to do), so each can be tested on
its own; the command only runs them and prints them."""
