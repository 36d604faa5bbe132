"""Files the dashboard serves (a package so that wheels ship them as package data)."""
