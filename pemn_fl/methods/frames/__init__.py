"""The machinery methods share, one concept a module (a method module is small because these
hold the rest):

* ``replica``: state every party holds bit for bit, the update log and a node's catch-up;
* ``evolving``: the evolving prototype (seeded noise, noise masks, applying a round's levels);
* ``compressed``: the frame of the dense compressors (signSGD, QSGD, top-k): coded updates up,
  coded global steps down, over a replica;
* ``probmask``: FedPM's probabilistic masks (training, sampling, coupled samples);
* ``frozen``: the frozen-prototype round (pemn, pemn_wide): decode the global mask, start
  scores from it, train, send the mask back; the mask family's options;
* ``voting``: the frozen prototype's vote tally and a trimmed vote.

Every network a method trains, and a node's data slice, are built in ``pemn_fl/networks.py``.
(A client's edge scores from a global mask, ``pemn_fl/scores.py``, belong to the masked
layers, beside ``pemn_fl/masked.py``.)

Their strategies' shared round is ``methods/replicated.py``; the message conventions are
``methods/messages.py``.
"""
