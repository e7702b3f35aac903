"""The layer under the methods: the machinery a family of methods shares, one concept a module
(a method module is small because these hold the rest). Methods import frames and
``methods/base.py``, never another method; frames import each other and ``base``, never a
method.

* ``replica``: state every party holds bit for bit, the update log and a node's catch-up;
  ``replicated``: the strategy skeleton over it (screen, weigh, update, commit);
* ``dense``: the dense family's model and options (fedavg, signsgd, qsgd, topk);
  ``compressed``: the frame of the dense compressors: coded updates up, coded global steps
  down, over a replica;
* ``evolving``: the evolving prototype (seeded noise, noise masks, applying a round's levels),
  the run's network and the family's options; ``evolving_round``: its client step and server,
  a method being its ``Scheme`` (the level rule and basis), and the shared dithered vote;
* ``probmask``: FedPM's probabilistic masks (training, sampling, coupled samples) and what
  both FedPM methods share;
* ``frozen``: the frozen-prototype round (pemn, pemn_wide) on the client: decode the global
  mask, start scores from it, train, send the mask back; the mask family's options;
  ``mask_voting``: its server; ``voting``: the vote tally and a trimmed vote.

Every network a method trains, and a node's data slice, are built in ``pemn_fl/networks.py``.
(A client's edge scores from a global mask, ``pemn_fl/scores.py``, belong to the masked
layers, beside ``pemn_fl/masked.py``.) The message conventions are ``pemn_fl/messages.py``.
"""
