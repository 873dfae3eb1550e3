"""The spoken-command flywheel (paper section 4.2, Setting 2) on Fluent Speech Commands."""
