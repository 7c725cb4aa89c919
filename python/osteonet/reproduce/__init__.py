"""Paper reproductions callable from Python and from `osteonet reproduce <paper>`."""
