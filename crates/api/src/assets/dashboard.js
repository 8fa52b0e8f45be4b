fetch("/state_extremes")
