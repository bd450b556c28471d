"""Display labels and the way back; tables read from a committed executed page."""
import pytest

from paramstress import labels, provenance


def test_labels_and_their_names():
    assert labels.label("cifar10-jpeg") == "CIFAR-10 (JPEG)"
    assert labels.label("svhn") == "svhn"
    assert labels.label("squeezenet1_1", labels.ARCHS) == "SqueezeNet 1.1"
    assert labels.name_of("SqueezeNet 1.1", labels.ARCHS) == "squeezenet1_1"
    assert labels.name_of("mnist", labels.DATASETS) == "mnist"
    with pytest.raises(KeyError, match="neither a name nor a label"):
        labels.name_of("VGG-16", labels.ARCHS)


def test_published_table_reads_a_committed_pivot():
    # score_landscapes (published at gpu) prints its networks' test accuracies as a pivot
    table = provenance.published_table("score_landscapes", 'values="test accuracy (%)"')
    assert list(table.columns[:2]) == ["network", "data set"]
    assert len(table) == 12 and table["network"].nunique() == 4
    squeeze = table[(table["network"] == "SqueezeNet 1.1") & (table["data set"] == "MNIST")]
    assert len(squeeze) == 1 and float(squeeze["10"].iloc[0]) == pytest.approx(10.4)
    with pytest.raises(ValueError, match="code cells"):
        provenance.published_table("score_landscapes", "no cell has this text")
    with pytest.raises(ValueError, match="printed no table"):
        provenance.published_table("score_landscapes", "run.report()")
    with pytest.raises(FileNotFoundError):
        provenance.published_table("no_such_page", "x")
