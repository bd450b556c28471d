"""Sun et al.'s text columns behind one interface (:mod:`.tasks`): the LSTM language model
(:mod:`.language_model`, PTB-LM), the Chen & Manning parser (:mod:`.parser`, PTB-Parsing),
fairseq's Transformer (:mod:`.translation`, De-En), and the paired bootstrap over their
evaluation units (:mod:`.bootstrap`)."""
