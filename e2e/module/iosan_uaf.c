// SPDX-License-Identifier: GPL-2.0
/*
 * iosan_uaf - ground truth for iosan's end-to-end test.
 *
 * Loaded inside a QEMU guest with an emulated IOMMU, against the first NVMe
 * controller (PCI class 01:08:02). It does its work from module init and
 * always returns 0 (busybox insmod retries a failed finit_module with
 * init_module, which would run the cases twice); the caller rmmods it.
 *
 *   insmod iosan_uaf.ko phase=good   DMA done right: map, unmap, then free
 *   insmod iosan_uaf.ko phase=bug    DMA use-after-free, five ways
 *
 * Every page that matters is logged on one line a script can parse:
 *
 *   iosan_uaf: GOOD case=<name> dev=<bdf> pfn=0x<hex> npages=<n> dma=0x<hex>
 *   iosan_uaf: LEAK case=<name> dev=<bdf|none> pfn=0x<hex> npages=<n> dma=0x<hex>
 *
 * GOOD pages were unmapped before they were freed: a detector must not
 * report them. LEAK pages were freed (or handed out again) while an IOMMU
 * mapping still covered them: a detector must report every one, against
 * the device named (dev=none: a domain attached to no device).
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/dma-mapping.h>
#include <linux/scatterlist.h>
#include <linux/iommu.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/delay.h>
#include <linux/sizes.h>

static char *phase = "good";
module_param(phase, charp, 0444);
MODULE_PARM_DESC(phase, "good or bug");

/* How long a buggy case keeps the stale mapping before tearing it down. */
static unsigned int window_ms = 20;
module_param(window_ms, uint, 0444);
MODULE_PARM_DESC(window_ms, "milliseconds between the early free and the late unmap");

#define SG_PAGES 4
#define ISLAND_IOVA 0x40000000UL	/* unmanaged domain: 1 GiB, 2 MiB aligned */
#define ISLAND_ORDER 9			/* 2 MiB */

static void report(const char *verdict, const char *name, struct device *dev,
		   unsigned long pfn, unsigned long npages, u64 dma)
{
	pr_info("iosan_uaf: %s case=%s dev=%s pfn=0x%lx npages=%lu dma=0x%llx\n",
		verdict, name, dev ? dev_name(dev) : "none", pfn, npages, dma);
}

/*
 * DMA address of the idx-th page-sized CPU entry of a mapped table: the
 * IOMMU path may merge entries, so walk the DMA segments by length.
 */
static u64 sg_page_dma(struct sg_table *sgt, unsigned int idx)
{
	struct scatterlist *sg;
	u64 skip = (u64)idx * PAGE_SIZE;
	int i;

	for_each_sgtable_dma_sg(sgt, sg, i) {
		if (skip < sg_dma_len(sg))
			return sg_dma_address(sg) + skip;
		skip -= sg_dma_len(sg);
	}
	return 0;
}

/* Build and map a table over SG_PAGES separate pages. */
static int sg_setup(struct device *dev, struct sg_table *sgt,
		    struct page **pages, enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for (i = 0; i < SG_PAGES; i++) {
		pages[i] = alloc_page(GFP_KERNEL);
		if (!pages[i])
			goto free_pages;
	}
	if (sg_alloc_table(sgt, SG_PAGES, GFP_KERNEL))
		goto free_pages;
	for_each_sg(sgt->sgl, sg, SG_PAGES, i)
		sg_set_page(sg, pages[i], PAGE_SIZE, 0);
	if (dma_map_sgtable(dev, sgt, dir, 0)) {
		sg_free_table(sgt);
		goto free_pages;
	}
	return 0;

free_pages:
	while (i-- > 0)
		__free_page(pages[i]);
	return -ENOMEM;
}

/*
 * A paging domain of our own, attached to nothing: map 2 MiB, unmap it in
 * two halves. With bug set, the block is freed between the two unmaps.
 */
static void unmanaged_case(struct device *dev, bool bug)
{
	const char *name = bug ? "unmanaged-partial" : "unmanaged";
	struct iommu_domain *dom;
	struct page *block;
	phys_addr_t phys;
	size_t half = SZ_1M, gone;
	int ret;

	dom = iommu_paging_domain_alloc(dev);
	if (IS_ERR_OR_NULL(dom)) {
		pr_info("iosan_uaf: SKIP case=%s no paging domain (%ld)\n",
			name, PTR_ERR(dom));
		return;
	}
	block = alloc_pages(GFP_KERNEL, ISLAND_ORDER);
	if (!block)
		goto out_domain;
	phys = page_to_phys(block);
	ret = iommu_map(dom, ISLAND_IOVA, phys, SZ_2M,
			IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
	if (ret) {
		pr_info("iosan_uaf: SKIP case=%s iommu_map failed (%d)\n", name, ret);
		__free_pages(block, ISLAND_ORDER);
		goto out_domain;
	}
	gone = iommu_unmap(dom, ISLAND_IOVA, half);
	if (bug) {
		/* The upper half is still mapped when the whole block goes back. */
		__free_pages(block, ISLAND_ORDER);
		report("LEAK", name, NULL, page_to_pfn(block) + (half >> PAGE_SHIFT),
		       half >> PAGE_SHIFT, ISLAND_IOVA + half);
		msleep(window_ms);
		gone += iommu_unmap(dom, ISLAND_IOVA + half, half);
	} else {
		gone += iommu_unmap(dom, ISLAND_IOVA + half, half);
		__free_pages(block, ISLAND_ORDER);
		report("GOOD", name, NULL, page_to_pfn(block), 1UL << ISLAND_ORDER,
		       ISLAND_IOVA);
	}
	pr_info("iosan_uaf: NOTE case=%s unmapped=%zu of %u\n", name, gone, SZ_2M);
out_domain:
	iommu_domain_free(dom);
}

static void good_cases(struct device *dev)
{
	struct page *pg, *pages[SG_PAGES];
	struct sg_table sgt;
	dma_addr_t dma;
	void *cpu;
	int i;

	/* map-page: one page through the streaming API */
	pg = alloc_page(GFP_KERNEL);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (!dma_mapping_error(dev, dma)) {
			dma_unmap_page(dev, dma, PAGE_SIZE, DMA_BIDIRECTIONAL);
			report("GOOD", "map-page", dev, page_to_pfn(pg), 1, dma);
		}
		__free_page(pg);
	}

	/* map-sg: four pages through a scatter-gather table */
	if (!sg_setup(dev, &sgt, pages, DMA_TO_DEVICE)) {
		u64 addr[SG_PAGES];

		for (i = 0; i < SG_PAGES; i++)
			addr[i] = sg_page_dma(&sgt, i);
		dma_unmap_sgtable(dev, &sgt, DMA_TO_DEVICE, 0);
		sg_free_table(&sgt);
		for (i = 0; i < SG_PAGES; i++) {
			report("GOOD", "map-sg", dev, page_to_pfn(pages[i]), 1, addr[i]);
			__free_page(pages[i]);
		}
	}

	/* coherent: allocated and released through the DMA API */
	cpu = dma_alloc_coherent(dev, SZ_16K, &dma, GFP_KERNEL);
	if (cpu) {
		/* A blocking allocation may be vmapped: name the pfn only if linear. */
		if (virt_addr_valid(cpu))
			report("GOOD", "coherent", dev, page_to_pfn(virt_to_page(cpu)),
			       SZ_16K >> PAGE_SHIFT, dma);
		dma_free_coherent(dev, SZ_16K, cpu, dma);
	}

	unmanaged_case(dev, false);
}

static void bug_cases(struct device *dev)
{
	struct page *pg, *again, *pages[SG_PAGES];
	struct sg_table sgt;
	dma_addr_t dma;
	void *cpu;
	int i;

	/*
	 * free-no-unmap: the page goes back while mapped and the mapping is
	 * never removed. The next order-0 allocation on this CPU usually gets
	 * the same page back from the per-CPU list.
	 */
	pg = alloc_page(GFP_KERNEL);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, PAGE_SIZE, DMA_BIDIRECTIONAL);
		if (dma_mapping_error(dev, dma)) {
			__free_page(pg);
		} else {
			__free_page(pg);
			report("LEAK", "free-no-unmap", dev, page_to_pfn(pg), 1, dma);
			again = alloc_page(GFP_KERNEL);
			if (again) {
				pr_info("iosan_uaf: NOTE case=free-no-unmap realloc=%s pfn=0x%lx\n",
					again == pg ? "same" : "other", page_to_pfn(again));
				__free_page(again);
			}
		}
	}

	/* late-unmap: an order-2 block freed, its mapping removed later */
	pg = alloc_pages(GFP_KERNEL, 2);
	if (pg) {
		dma = dma_map_page(dev, pg, 0, 4 * PAGE_SIZE, DMA_FROM_DEVICE);
		if (dma_mapping_error(dev, dma)) {
			__free_pages(pg, 2);
		} else {
			__free_pages(pg, 2);
			report("LEAK", "late-unmap", dev, page_to_pfn(pg), 4, dma);
			msleep(window_ms);
			dma_unmap_page(dev, dma, 4 * PAGE_SIZE, DMA_FROM_DEVICE);
		}
	}

	/* sg-early-free: table pages freed before the table is unmapped */
	if (!sg_setup(dev, &sgt, pages, DMA_TO_DEVICE)) {
		for (i = 0; i < SG_PAGES; i++) {
			__free_page(pages[i]);
			report("LEAK", "sg-early-free", dev, page_to_pfn(pages[i]), 1,
			       sg_page_dma(&sgt, i));
		}
		msleep(window_ms);
		dma_unmap_sgtable(dev, &sgt, DMA_TO_DEVICE, 0);
		sg_free_table(&sgt);
	}

	/*
	 * coherent-behind-api: an atomic coherent allocation is physically
	 * contiguous and linearly mapped; give its pages back to the page
	 * allocator directly and never call dma_free_coherent.
	 */
	cpu = dma_alloc_coherent(dev, SZ_8K, &dma, GFP_ATOMIC);
	if (cpu && virt_addr_valid(cpu)) {
		pg = virt_to_page(cpu);
		__free_pages(pg, 1);
		report("LEAK", "coherent-behind-api", dev, page_to_pfn(pg), 2, dma);
	} else if (cpu) {
		pr_info("iosan_uaf: SKIP case=coherent-behind-api buffer is not linear\n");
		dma_free_coherent(dev, SZ_8K, cpu, dma);
	}

	unmanaged_case(dev, true);
}

static int __init iosan_uaf_init(void)
{
	struct pci_dev *pdev;
	struct device *dev;

	/* PCI_CLASS_STORAGE_EXPRESS is the full class code 0x010802 */
	pdev = pci_get_class(PCI_CLASS_STORAGE_EXPRESS, NULL);
	if (!pdev) {
		pr_err("iosan_uaf: ERROR no NVMe controller found\n");
		return 0;
	}
	dev = &pdev->dev;
	pr_info("iosan_uaf: BEGIN phase=%s dev=%s driver=%s\n", phase,
		dev_name(dev), dev->driver ? dev->driver->name : "none");
	if (!strcmp(phase, "good"))
		good_cases(dev);
	else if (!strcmp(phase, "bug"))
		bug_cases(dev);
	else
		pr_err("iosan_uaf: ERROR unknown phase=%s\n", phase);
	pr_info("iosan_uaf: END phase=%s\n", phase);
	pci_dev_put(pdev);
	return 0;
}

static void __exit iosan_uaf_exit(void)
{
}

module_init(iosan_uaf_init);
module_exit(iosan_uaf_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iosan end-to-end test: correct DMA and injected DMA use-after-free");
