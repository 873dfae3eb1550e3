"""The RNN-T ASR flywheel (paper section 4.1, Setting 1): so far its loss,
decoders and WER; the data, model and run stages are still to come."""
